"""Every step measured against the bare problem (q_h - q_0): the progress of all steps so far, not of step h. Caught
by test_advantages_by_hand."""

from exercises.solutions.ex3_advantage import effective_reward  # noqa: F401 (the other function, right)


def advantages(q):
    return q[..., 1:] - q[..., :1]
