"""Exercise 1: the Best-of-K prover in closed form (section 3.2, Remark 3.1).

The [prover](../docs/glossary.md#prover) mu is the policy under which a step's progress is measured. The prover
[BoK(pi)](../docs/glossary.md#bok) samples K complete responses from pi, starting from the same prefix, and succeeds if
any of them does. If pi succeeds from a state with probability Q = [Q^pi(s, a)](../docs/glossary.md#q-value), the K
attempts are independent, so

    Q^{BoK(pi)}(s, a) = 1 - (1 - Q^pi(s, a))^K

Implement `bok_closed(q, k)` for a tensor q of Q^pi values (any shape, a single value too) and an integer K >= 1; return
a new tensor of q's shape and dtype, and leave q as it was. Check yourself: Q = 0.5, K = 2 gives 0.75; K = 1 gives Q
back; Q = 0 stays 0 and Q = 1 stays 1 for any K; Q = 1e-9 in float64 gives about K * 1e-9. Then look at pav.bok_closed.
Why is BoK(pi) a better prover than pi itself when Q^pi is small (Remark 3.1)? (Our answer:
exercises/solutions/ex1_best_of_k.py.)
Then run it in the pipeline: `python exercises/experiments.py rl` (with exercises 3 and 4).
"""

import torch


def bok_closed(q: torch.Tensor, k: int) -> torch.Tensor:
    raise NotImplementedError("exercise 1: your code here")
