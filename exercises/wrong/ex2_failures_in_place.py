"""The failure counts n - c computed in place: the caller's success counts are overwritten. Caught by
test_input_unchanged."""

import torch


def bok_unbiased(c, n, k):
    fails = c.neg_().add_(n).double()                   # n - c, written into c
    i = torch.arange(k, dtype=torch.float64)
    return 1 - ((fails[..., None] - i).clamp(min=0) / (n - i)).prod(-1)
