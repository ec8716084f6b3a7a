"""Exercise 2: Q^{BoK(pi)} estimated without bias from n Monte Carlo rollouts (section 3.2).

We never know [Q^pi](../docs/glossary.md#q-value) exactly: from a prefix we roll out pi n times
([n_mc](../docs/glossary.md#n_mc) in the project) and see c successes. Plugging Q_hat = c / n into exercise 1's closed
form 1 - (1 - Q_hat)^K is biased: with n = K = 2 its mean is 1.5 q - 0.5 q^2, below the true 2 q - q^2 (q = Q^pi). The
unbiased estimate is the [pass@k](../docs/glossary.md#pass-at-n) estimator: choose K of the n rollouts without
replacement; [BoK](../docs/glossary.md#bok) fails only if all K chosen ones failed, so

    Q_hat^{BoK} = 1 - C(n - c, K) / C(n, K)          (needs n >= K; C(m, K) = 0 when m < K)

Implement `bok_unbiased(c, n, k)` for a tensor c of success counts (any shape; whole numbers 0..n, as a float or an
integer tensor); return a float tensor of the same shape, and leave c as it was. Compute C(n - c, K) / C(n, K) as a
product of K ratios, not with factorials, so that it stays exact for n = 64. With K > n no unbiased estimate exists:
raise a ValueError. Check yourself: n = 4, c = 1, K = 2 gives 1 - C(3, 2) / C(4, 2) = 1 - 3/6 = 0.5.
Then run it in the pipeline: `python exercises/experiments.py provers` (Theorem 3.1's terms per prover).
"""

import torch


def bok_unbiased(c: torch.Tensor, n: int, k: int) -> torch.Tensor:
    raise NotImplementedError("exercise 2: your code here")
