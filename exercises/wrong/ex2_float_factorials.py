"""C(m, K) from factorials in float32: right for small n, but 64! overflows (inf / inf). Caught by test_hand_values."""

import torch


def bok_unbiased(c, n, k):
    fact = lambda m: torch.exp(torch.lgamma(torch.as_tensor(m, dtype=torch.float32) + 1))   # m < 0: inf, C = 0
    comb = lambda m: fact(m) / (fact(k) * fact(m - k))
    return 1 - comb(n - c) / comb(n)
