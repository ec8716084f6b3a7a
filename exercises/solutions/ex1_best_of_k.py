"""Solution to exercise 1 (see exercises/ex1_best_of_k.py).

Answers

Why is BoK(pi) a better prover than pi itself when Q^pi is small (Remark 3.1)? Theorem 3.1 (a tabular softmax policy,
one natural policy-gradient step on the effective reward) bounds the improvement from below by two terms:
distinguishability, E_s Var_{a~pi} A^mu(s, a), how much the prover's advantages differ between the steps pi might take;
and alignment, E_s E_{a~pi}[A^mu A^pi], whether the prover calls progress what is progress for pi. The prover mu = pi
adds nothing (in expectation its gradient is outcome RL's, section 3.2), and when Q^pi is small every A^pi is small too:
the difference of two small probabilities. BoK(pi) stretches small values. Q^{BoK} = 1 - (1 - Q)^K rises with slope
`K (1 - Q)^(K - 1)`, which is more than K / e at Q = 1/K, so a step that moves Q^pi by d moves Q^{BoK} by about K d:
advantages about K times larger and their variance, distinguishability, about K^2 times (Remark 3.1's Omega(K^2)). With
K = 4, a step from Q^pi = 0.02 to 0.05 (A^pi = 0.03) has A^{Bo4} = 0.1855 - 0.0776 = 0.108, 3.6 times as much. The map
is increasing, so BoK(pi) ranks states as pi does and stays aligned with it; Remark 3.1 bounds the loss of alignment by
O(K). K cannot grow without end: once (1 - Q)^K is near 0, Q^{BoK} is near 1 before and after every step and A^mu
vanishes again (with K = 16 a step from Q^pi = 0.4 to 0.5 moves Q^{BoK} by 0.0003). Hence the paper's Bo4 for search,
with Bo2 too weak and Bo16/Bo32 too strong (Fig. 5b), and the inverted U of the toy's prover sweep (Fig. 3b).
tests/test_exercises.py checks these numbers.
"""

import torch


def bok_closed(q: torch.Tensor, k: int) -> torch.Tensor:
    # Q^{BoK(pi)} = 1 - (1 - Q^pi)^K: all K independent attempts fail with probability (1 - Q)^K
    return 1 - (1 - q) ** k
