import itertools
import math

import pytest
import torch

EXERCISE = "ex2_unbiased_bok"


def test_hand_values(ex):
    assert float(ex.bok_unbiased(torch.tensor(1.0), 4, 2)) == pytest.approx(0.5)
    assert float(ex.bok_unbiased(torch.tensor(0.0), 4, 2)) == pytest.approx(0.0)
    assert float(ex.bok_unbiased(torch.tensor(3.0), 4, 2)) == pytest.approx(1.0)    # only one failure: any 2 hit
    assert float(ex.bok_unbiased(torch.tensor(2.0), 4, 1)) == pytest.approx(0.5)    # K = 1 is c / n
    assert float(ex.bok_unbiased(torch.tensor(5.0), 64, 16)) == pytest.approx(1 - math.comb(59, 16) / math.comb(64, 16))


def test_it_is_unbiased(ex):
    """Averaged over every way the n rollouts can come out, the estimate equals the closed form exactly."""
    q, n, k = 0.3, 6, 3
    mean = 0.0
    for outcome in itertools.product([0, 1], repeat=n):
        c = sum(outcome)
        mean += q ** c * (1 - q) ** (n - c) * float(ex.bok_unbiased(torch.tensor(float(c)), n, k))
    assert mean == pytest.approx(1 - (1 - q) ** k)


def test_shape(ex):
    c = torch.tensor([[0.0, 1.0, 2.0], [3.0, 4.0, 4.0]])
    assert ex.bok_unbiased(c, 4, 2).shape == c.shape
