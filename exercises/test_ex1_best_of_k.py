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


def test_any_shape_and_dtype(ex):
    one = ex.bok_closed(torch.tensor(0.5), 2)                              # a single value: a 0-d tensor
    assert one.shape == () and float(one) == pytest.approx(0.75)
    assert ex.bok_closed(torch.full((2, 3, 4), 0.5), 3).shape == (2, 3, 4)
    # float64 in, float64 out: Q = 1e-9 (Remark 3.1's regime) gives K * Q, where float32 rounds 1 - Q to 1
    tiny = ex.bok_closed(torch.tensor([1e-9], dtype=torch.float64), 4)
    assert tiny.dtype == torch.float64 and float(tiny) == pytest.approx(4e-9, rel=1e-6)


def test_input_unchanged(ex):
    q = torch.tensor([0.1, 0.5])
    ex.bok_closed(q, 4)
    assert torch.equal(q, torch.tensor([0.1, 0.5]))
