"""Q^pi of the whole response (its last value, like the outcome) for every step. Caught by
test_effective_reward_by_hand."""

from exercises.solutions.ex3_advantage import advantages  # noqa: F401 (the other function, right)


def effective_reward(q_pi, a_mu, alpha):
    return q_pi[:, -1:] + alpha * a_mu
