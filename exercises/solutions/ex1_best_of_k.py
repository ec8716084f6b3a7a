"""Solution to exercise 1 (see exercises/ex1_best_of_k.py)."""

import torch


def bok_closed(q: torch.Tensor, k: int) -> torch.Tensor:
    # Q^{BoK(pi)} = 1 - (1 - Q^pi)^K: all K independent attempts fail with probability (1 - Q)^K
    return 1 - (1 - q) ** k
