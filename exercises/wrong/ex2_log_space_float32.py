"""C(m, K) from log-gamma differences in float32: no overflow, but at n = 64 a small Q^BoK comes out 0.03124, not
2/64 = 0.03125. Caught by test_hand_values."""

import torch


def bok_unbiased(c, n, k):
    if k > n:
        raise ValueError("K > n")
    log_comb = lambda m: torch.lgamma(m + 1) - torch.lgamma(torch.tensor(k + 1.0)) - torch.lgamma(m - k + 1)
    m = torch.as_tensor(c, dtype=torch.float32)
    return 1 - torch.exp(log_comb(n - m) - log_comb(torch.tensor(float(n))))   # m < K: lgamma(<= 0) = inf, C = 0
