"""Q before the step minus Q after it: regress is rewarded. Caught by test_advantages_by_hand."""

from exercises.solutions.ex3_advantage import effective_reward  # noqa: F401 (the other function, right)


def advantages(q):
    return q[..., :-1] - q[..., 1:]
