"""A loop over c.flatten() whose result keeps the flat shape: right for a single count only. Caught by test_shape."""

import math

import torch


def bok_unbiased(c, n, k):
    return torch.tensor([1 - math.comb(n - int(x), k) / math.comb(n, k) for x in c.flatten()])
