"""The K ratios taken for i = 1..K instead of i = 0..K-1. Caught by test_hand_values."""

import torch


def bok_unbiased(c, n, k):
    c = torch.as_tensor(c, dtype=torch.float64)
    i = torch.arange(1, k + 1, dtype=torch.float64)
    return 1 - ((n - c[..., None] - i).clamp(min=0) / (n - i)).prod(-1)
