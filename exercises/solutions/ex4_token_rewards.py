"""Solution to exercise 4 (see exercises/ex4_token_rewards.py)."""

import torch


def token_rewards(step_rewards: torch.Tensor, step_end: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    ends = step_end.long()                                                # (N, T)
    step = ends.cumsum(-1) - ends                                         # (N, T): steps ended before token t
    step = step.clamp(max=step_rewards.shape[1] - 1)
    return step_rewards.gather(1, step) * mask                            # (N, T)
