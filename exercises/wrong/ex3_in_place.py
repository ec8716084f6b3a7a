"""The differences written into q itself: the caller's values are gone. Caught by test_inputs_unchanged."""

from exercises.solutions.ex3_advantage import effective_reward  # noqa: F401 (the other function, right)


def advantages(q):
    q[..., 1:] -= q[..., :-1].clone()
    return q[..., 1:]
