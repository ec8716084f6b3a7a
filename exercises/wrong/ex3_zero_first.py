"""H + 1 advantages, a 0 for the bare problem in front: one too many, each one step late. Caught by
test_advantages_telescope."""

import torch

from exercises.solutions.ex3_advantage import effective_reward  # noqa: F401 (the other function, right)


def advantages(q):
    return torch.cat([torch.zeros_like(q[..., :1]), q[..., 1:] - q[..., :-1]], -1)
