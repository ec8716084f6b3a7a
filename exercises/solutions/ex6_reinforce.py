"""Solution to exercise 6 (see exercises/ex6_reinforce.py)."""

import torch


def reinforce_loss(logp: torch.Tensor, outcomes: torch.Tensor, step_adv: torch.Tensor, mask: torch.Tensor,
                   group: int, alpha: float) -> torch.Tensor:
    g = outcomes.view(-1, group)                                          # (N / group, group)
    baseline = ((g.sum(1, keepdim=True) - g) / (group - 1)).view(-1)      # (N,) mean of the others
    rewards = (outcomes - baseline)[:, None] + alpha * step_adv           # (N, T)
    mask = mask.float()
    return -(logp * rewards.detach() * mask).sum() / mask.sum()
