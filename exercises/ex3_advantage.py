"""Exercise 3: progress, the advantage of a step (Eq. 2), and the effective reward (Eq. 5).

A response is [steps](../docs/glossary.md#step) a_1 .. a_H; the state before step h is s_h = (x, a_1 .. a_{h-1}). A
verifier (the [PAV](../docs/glossary.md#pav)) or Monte Carlo gives the [prover](../docs/glossary.md#prover)'s value of
every prefix: q[..., 0] for the bare problem, q[..., h] after step h, so q has H + 1 entries. The paper rewards a step
by the progress it makes under the prover mu, its [advantage](../docs/glossary.md#advantage):

    Eq. 2:  A^mu(s_h, a_h) = Q^mu(s_h, a_h) - Q^mu(s_{h-1}, a_{h-1})  =  q_mu[..., h] - q_mu[..., h - 1]

and scores it in search and RL by the [effective reward](../docs/glossary.md#effective-reward)

    Eq. 5:  Q^pi(s_h, a_h) + alpha * A^mu(s_h, a_h)

where [Q^pi(s_h, a_h)](../docs/glossary.md#q-value) is the base policy's value after step h (q_pi[..., h]) and
[alpha](../docs/glossary.md#alpha) weighs progress against it.

Implement `advantages(q)`: (..., H + 1) -> (..., H), for any number of leading dimensions (one response (H + 1,), a
batch (B, H + 1), ...), and `effective_reward(q_pi, a_mu, alpha)`: q_pi (B, H + 1), a_mu (B, H) -> (B, H). Leave the
inputs as they were. Check yourself: q = [0.2, 0.6, 0.5] gives advantages [0.4, -0.1], which sum to q[H] - q[0] (they
telescope). Why would rewarding q_mu[..., h] itself, instead of its change, reward a step that makes no progress
(appendix G)? (Our answer: exercises/solutions/ex3_advantage.py.)
Then run it in the pipeline: `python exercises/experiments.py rl` and `reward-q` (with exercises 1 and 4).
"""

import torch


def advantages(q: torch.Tensor) -> torch.Tensor:
    raise NotImplementedError("exercise 3: your code here")


def effective_reward(q_pi: torch.Tensor, a_mu: torch.Tensor, alpha: float) -> torch.Tensor:
    raise NotImplementedError("exercise 3: your code here")
