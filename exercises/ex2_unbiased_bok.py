"""Exercise 2: Q^{BoK(pi)} estimated without bias from n Monte Carlo rollouts (section 3.2).

We never know Q^pi exactly: from a prefix we roll out pi n times and see c successes. Plugging Q_hat = c / n into the
closed form 1 - (1 - Q_hat)^K is biased (try n = 1, K = 2). The unbiased estimate is the pass@k estimator: choose K
of the n rollouts without replacement; BoK fails only if all K chosen ones failed, so

    Q_hat^{BoK} = 1 - C(n - c, K) / C(n, K)          (needs n >= K; C(m, K) = 0 when m < K)

Implement `bok_unbiased(c, n, k)` for a tensor c of success counts (any shape, whole numbers 0..n); return a float
tensor of the same shape. Compute C(n - c, K) / C(n, K) as a product of K ratios, not with factorials, so that it
stays exact for n = 64. Check yourself: n = 4, c = 1, K = 2 gives 1 - C(3, 2) / C(4, 2) = 1 - 3/6 = 0.5.
"""

import torch


def bok_unbiased(c: torch.Tensor, n: int, k: int) -> torch.Tensor:
    raise NotImplementedError("exercise 2: your code here")
