"""Solution to exercise 3 (see exercises/ex3_advantage.py)."""

import torch


def advantages(q: torch.Tensor) -> torch.Tensor:
    # Eq. 2: A^mu(s_h, a_h) = Q^mu(s_h, a_h) - Q^mu(s_{h-1}, a_{h-1})
    return q[..., 1:] - q[..., :-1]


def effective_reward(q_pi: torch.Tensor, a_mu: torch.Tensor, alpha: float) -> torch.Tensor:
    # Eq. 5: Q^pi(s_h, a_h) + alpha * A^mu(s_h, a_h), with Q^pi after step h
    return q_pi[:, 1:] + alpha * a_mu
