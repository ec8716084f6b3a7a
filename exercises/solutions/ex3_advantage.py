"""Solution to exercise 3 (see exercises/ex3_advantage.py).

Answers

Why would rewarding q_mu[..., h] itself, instead of its change, reward a step that makes no progress (appendix G)?
Q^mu(s_h, a_h) is the prover's chance of success after step h, and by Eq. 2 it is
`Q^mu(s_{h-1}, a_{h-1}) + A^mu(s_h, a_h)`: the value of the state the step started from, which the step did not earn,
plus the progress it made. A step that makes no progress, such as restating the problem, leaves the value where it was:
its advantage is 0, but its Q^mu is the value of the state before it, positive whenever the prover can solve the problem
from there. With q_mu = [0.6, 0.6, 0.9] (a restatement, then a real step) the Q^mu rewards are 0.6 and 0.9, the
advantages 0 and 0.3; a step that spoils the solution, 0.6 -> 0.3, still earns +0.3 under Q^mu and -0.3 as an advantage.
So under Q^mu a safe, empty step is paid as much as the state is worth, and RL on it learned exactly that: a no-progress
first step ("REPHRASE THE PROBLEM") that Q^mu already rewards (appendix G). Advantages cannot be farmed this way: an
empty step earns 0, and they telescope (they sum to q[H] - q[0]), so a response's total is fixed by where it starts and
ends, whatever steps it pads itself with. Where each step is paid its own reward alone, as in rl.py, the part of
Q^mu fixed before the step has zero expected gradient, so there the two rewards differ only in noise: farming needs
rewards that add up over steps, as a return does (experiment C, exercises/solutions/experiments.md). (The Q^pi term
of Eq. 5 is different: sum_h grad log pi(a_h | s_h) Q^pi(s_h, a_h) is the gradient of outcome RL itself, Eq. 3; no
such identity holds for the values of another policy mu.)
tests/test_exercises.py checks these numbers.
"""

import torch


def advantages(q: torch.Tensor) -> torch.Tensor:
    # Eq. 2: A^mu(s_h, a_h) = Q^mu(s_h, a_h) - Q^mu(s_{h-1}, a_{h-1})
    return q[..., 1:] - q[..., :-1]


def effective_reward(q_pi: torch.Tensor, a_mu: torch.Tensor, alpha: float) -> torch.Tensor:
    # Eq. 5: Q^pi(s_h, a_h) + alpha * A^mu(s_h, a_h), with Q^pi after step h
    return q_pi[:, 1:] + alpha * a_mu
