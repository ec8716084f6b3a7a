"""advantages written for (B, H + 1) input only (q[:, 1:]): a single response (H + 1,) fails, and (P, B, H + 1) is
differenced along the wrong axis. Caught by test_advantages_any_leading_shape."""

from exercises.solutions.ex3_advantage import effective_reward  # noqa: F401 (the other function, right)


def advantages(q):
    return q[:, 1:] - q[:, :-1]
