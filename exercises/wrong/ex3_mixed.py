"""A convex mix (1 - alpha) Q^pi + alpha A^mu instead of Q^pi + alpha A^mu. Caught by test_effective_reward_by_hand."""

from exercises.solutions.ex3_advantage import advantages  # noqa: F401 (the other function, right)


def effective_reward(q_pi, a_mu, alpha):
    return (1 - alpha) * q_pi[:, 1:] + alpha * a_mu
