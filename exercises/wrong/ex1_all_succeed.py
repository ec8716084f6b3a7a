"""Q^K: the chance that all K attempts succeed, not that any does. Caught by test_hand_values."""


def bok_closed(q, k):
    return q ** k
