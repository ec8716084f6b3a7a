"""K > n silently replaced by K = n: a number for a question the samples cannot answer. Caught by
test_k_above_n_is_an_error."""

import torch


def bok_unbiased(c, n, k):
    k = min(k, n)
    c = torch.as_tensor(c, dtype=torch.float64)
    i = torch.arange(k, dtype=torch.float64)
    return 1 - ((n - c[..., None] - i).clamp(min=0) / (n - i)).prod(-1)
