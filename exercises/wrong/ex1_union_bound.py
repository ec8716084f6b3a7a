"""K * Q, capped at 1: K chances added up as if they never succeeded together. Caught by test_hand_values."""


def bok_closed(q, k):
    return (k * q).clamp(max=1.0)
