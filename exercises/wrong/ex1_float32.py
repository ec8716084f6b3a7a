"""Computed in float32 whatever the input: Q = 1e-9 (Remark 3.1's regime, Q^pi small) gives 0 instead of K * 1e-9.
Caught by test_any_shape_and_dtype."""


def bok_closed(q, k):
    return 1 - (1 - q.float()) ** k
