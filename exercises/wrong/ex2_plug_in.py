"""Q_hat = c / n plugged into the closed form: biased for K > 1. Caught by test_hand_values, test_it_is_unbiased."""


def bok_unbiased(c, n, k):
    return 1 - (1 - c / n) ** k
