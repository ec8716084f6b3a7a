import pytest
import torch

EXERCISE = "ex3_advantage"


def test_advantages_by_hand(ex):
    q = torch.tensor([[0.2, 0.6, 0.5], [0.0, 0.0, 1.0]])
    assert ex.advantages(q).tolist() == [pytest.approx([0.4, -0.1]), pytest.approx([0.0, 1.0])]


def test_advantages_telescope(ex):
    q = torch.rand(4, 7)
    a = ex.advantages(q)
    assert a.shape == (4, 6)
    torch.testing.assert_close(a.sum(-1), q[:, -1] - q[:, 0])


def test_advantages_any_leading_shape(ex):
    """(..., H + 1) -> (..., H): one response, a batch, or a batch per problem."""
    assert ex.advantages(torch.tensor([0.2, 0.6, 0.5])).tolist() == pytest.approx([0.4, -0.1])
    q = torch.rand(2, 3, 5)                                               # (P, B, H + 1)
    a = ex.advantages(q)
    assert a.shape == (2, 3, 4)
    for i in range(2):
        for j in range(3):
            assert a[i, j].tolist() == pytest.approx([float(q[i, j, h] - q[i, j, h - 1]) for h in range(1, 5)])


def test_effective_reward_by_hand(ex):
    q_pi = torch.tensor([[0.2, 0.6, 0.5]])
    a_mu = torch.tensor([[0.3, -0.2]])
    # step 1: 0.6 + 0.5 * 0.3 = 0.75; step 2: 0.5 + 0.5 * (-0.2) = 0.4
    assert ex.effective_reward(q_pi, a_mu, 0.5).tolist() == [pytest.approx([0.75, 0.4])]
    assert ex.effective_reward(q_pi, a_mu, 0.0).tolist() == [pytest.approx([0.6, 0.5])]   # alpha 0: Q^pi alone
    q_pi = torch.tensor([[0.2, 0.6, 0.5], [0.1, 0.1, 0.9]])              # a second response: each row its own
    a_mu = torch.tensor([[0.3, -0.2], [0.0, 0.4]])
    # row 2: 0.1 + 2 * 0 = 0.1; 0.9 + 2 * 0.4 = 1.7
    assert ex.effective_reward(q_pi, a_mu, 2.0).tolist() == [pytest.approx([1.2, 0.1]), pytest.approx([0.1, 1.7])]


def test_inputs_unchanged(ex):
    q, a_mu = torch.tensor([[0.2, 0.6, 0.5]]), torch.tensor([[0.3, -0.2]])
    ex.advantages(q)
    ex.effective_reward(q, a_mu, 0.5)
    assert torch.equal(q, torch.tensor([[0.2, 0.6, 0.5]])) and torch.equal(a_mu, torch.tensor([[0.3, -0.2]]))
