import pytest
import torch

EXERCISE = "ex1_best_of_k"


def test_hand_values(ex):
    q = torch.tensor([0.0, 0.1, 0.5, 1.0])
    assert ex.bok_closed(q, 1).tolist() == pytest.approx([0.0, 0.1, 0.5, 1.0])
    assert ex.bok_closed(q, 2).tolist() == pytest.approx([0.0, 0.19, 0.75, 1.0])
    assert ex.bok_closed(q, 4).tolist() == pytest.approx([0.0, 0.3439, 0.9375, 1.0])


def test_shape_and_monotone_in_k(ex):
    q = torch.rand(3, 5)
    out = [ex.bok_closed(q, k) for k in (1, 2, 4, 8)]
    assert all(o.shape == q.shape for o in out)
    assert all(bool((a <= b + 1e-7).all()) for a, b in zip(out, out[1:]))   # a stronger prover never does worse
