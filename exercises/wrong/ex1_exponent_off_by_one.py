"""1 - (1 - Q)^(K - 1): one attempt too few (K = 1 gives 0). Caught by test_hand_values."""


def bok_closed(q, k):
    return 1 - (1 - q) ** (k - 1)
