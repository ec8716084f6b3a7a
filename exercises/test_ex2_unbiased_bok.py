import itertools
import math

import pytest
import torch

EXERCISE = "ex2_unbiased_bok"


def test_hand_values(ex):
    assert float(ex.bok_unbiased(torch.tensor(1.0), 4, 2)) == pytest.approx(0.5)
    assert float(ex.bok_unbiased(torch.tensor(0.0), 4, 2)) == pytest.approx(0.0)
    assert float(ex.bok_unbiased(torch.tensor(3.0), 4, 2)) == pytest.approx(1.0)    # only one failure: any 2 hit
    assert float(ex.bok_unbiased(torch.tensor(4.0), 4, 2)) == pytest.approx(1.0)
    assert float(ex.bok_unbiased(torch.tensor(2.0), 4, 1)) == pytest.approx(0.5)    # K = 1 is c / n
    assert float(ex.bok_unbiased(torch.tensor(0.0), 4, 4)) == pytest.approx(0.0)    # K = n: all n are the K
    assert float(ex.bok_unbiased(torch.tensor(1.0), 4, 4)) == pytest.approx(1.0)
    assert float(ex.bok_unbiased(torch.tensor(5.0), 64, 16)) == pytest.approx(1 - math.comb(59, 16) / math.comb(64, 16))
    assert float(ex.bok_unbiased(torch.tensor(1.0), 64, 2)) == pytest.approx(2 / 64, rel=1e-5)   # 1 - (63/64)(62/63)


def mean_over_outcomes(estimate, q, n):
    """E[estimate(c)] when each of n rollouts succeeds with probability q: a sum over all 2^n ways they come out."""
    return sum(q ** sum(o) * (1 - q) ** (n - sum(o)) * estimate(sum(o)) for o in itertools.product([0, 1], repeat=n))


def test_it_is_unbiased(ex):
    """The estimate's mean is the closed form exactly; the plug-in's is not (the docstring's n = K = 2 numbers)."""
    q = 0.3
    ours = lambda n, k: mean_over_outcomes(lambda c: float(ex.bok_unbiased(torch.tensor(float(c)), n, k)), q, n)
    assert ours(6, 3) == pytest.approx(1 - (1 - q) ** 3)
    assert ours(2, 2) == pytest.approx(2 * q - q ** 2)
    plug_in = mean_over_outcomes(lambda c: 1 - (1 - c / 2) ** 2, q, 2)
    assert plug_in == pytest.approx(1.5 * q - 0.5 * q ** 2)                # below 2 q - q^2: biased low


def test_shape(ex):
    c = torch.tensor([[0.0, 1.0, 2.0], [3.0, 4.0, 4.0]])
    assert ex.bok_unbiased(c, 4, 2).shape == c.shape


def test_integer_counts(ex):
    out = ex.bok_unbiased(torch.tensor([0, 1, 4]), 4, 2)                   # counts are whole numbers: an int64 tensor
    assert out.is_floating_point() and out.tolist() == pytest.approx([0.0, 0.5, 1.0])


def test_k_above_n_is_an_error(ex):
    with pytest.raises(ValueError):
        ex.bok_unbiased(torch.tensor([0.0, 1.0]), 2, 3)


def test_input_unchanged(ex):
    c = torch.tensor([1.0, 3.0])
    ex.bok_unbiased(c, 4, 2)
    assert torch.equal(c, torch.tensor([1.0, 3.0]))
