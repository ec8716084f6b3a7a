"""The product accumulated in place in torch.ones_like(c): integer counts make an integer tensor that cannot hold the
ratios. Caught by test_integer_counts."""

import torch


def bok_unbiased(c, n, k):
    ratio = torch.ones_like(c)
    for i in range(k):
        ratio *= (n - c - i).clamp(min=0) / (n - i)
    return 1 - ratio
