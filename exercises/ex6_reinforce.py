"""Exercise 6: the REINFORCE loss with a leave-one-out baseline and dense per-step rewards (Eqs. 3-5, section 5).

For each problem we sample `group` responses (rows of one problem are adjacent). Response i has an outcome
[Rex_i](../docs/glossary.md#rex) in {0, 1} (Eq. 3's reward), and every token t of it a per-step term A_t, the
[advantage](../docs/glossary.md#advantage) A^mu of the step it belongs to (exercise 4 placed it on the tokens). The
reward of token t of response i is

    r_it = (Rex_i - b_i) + alpha * A_t,      b_i = mean of Rex over the OTHER responses of i's group

The baseline b_i does not depend on response i, so subtracting it leaves the gradient unbiased and lowers its variance.
With [alpha](../docs/glossary.md#alpha) = 0 this is outcome-only RL (Eq. 3, the reward an [ORM](../docs/glossary.md#orm)
predicts); with alpha > 0 it is Eq. 5's [effective reward](../docs/glossary.md#effective-reward), Rex standing in for
[Q^pi(s_h, a_h)](../docs/glossary.md#q-value) as the rollout's own Monte Carlo estimate.

Implement `reinforce_loss(logp, outcomes, step_adv, mask, group, alpha)`: logp (N, T) the log-probability of every
sampled token (it carries the gradient), outcomes (N,), step_adv (N, T), mask (N, T) True on real tokens; N is a
multiple of `group` >= 2. Return the scalar loss = - sum_it mask_it * logp_it * r_it / sum_it mask_it. The rewards are
constants: no gradient may flow through them, even if outcomes or step_adv carry one. Leave the inputs as they were.
Check yourself: outcomes [1, 0] in one group give baselines [0, 1] and outcome terms [+1, -1].
"""

import torch


def reinforce_loss(logp: torch.Tensor, outcomes: torch.Tensor, step_adv: torch.Tensor, mask: torch.Tensor,
                   group: int, alpha: float) -> torch.Tensor:
    raise NotImplementedError("exercise 6: your code here")
