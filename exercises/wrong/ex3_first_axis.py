"""advantages written for one response (H + 1,): q[1:] - q[:-1] differences rows, not steps, once there is a batch.
Caught by test_advantages_by_hand."""

from exercises.solutions.ex3_advantage import effective_reward  # noqa: F401 (the other function, right)


def advantages(q):
    return q[1:] - q[:-1]
