"""Solution to exercise 2 (see exercises/ex2_unbiased_bok.py)."""

import torch


def bok_unbiased(c: torch.Tensor, n: int, k: int) -> torch.Tensor:
    if k > n:
        raise ValueError(f"no unbiased estimate of Q^BoK from n={n} < K={k} rollouts")
    c = torch.as_tensor(c, dtype=torch.float64)
    i = torch.arange(k, dtype=torch.float64)
    # C(n - c, K) / C(n, K) = prod_{i < K} (n - c - i) / (n - i), which is 0 once n - c < K
    ratio = ((n - c[..., None] - i).clamp(min=0) / (n - i)).prod(-1)
    return 1 - ratio
