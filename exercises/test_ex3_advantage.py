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


def test_effective_reward_by_hand(ex):
    q_pi = torch.tensor([[0.2, 0.6, 0.5]])
    a_mu = torch.tensor([[0.3, -0.2]])
    # step 1: 0.6 + 0.5 * 0.3 = 0.75; step 2: 0.5 + 0.5 * (-0.2) = 0.4
    assert ex.effective_reward(q_pi, a_mu, 0.5).tolist() == [pytest.approx([0.75, 0.4])]
    assert ex.effective_reward(q_pi, a_mu, 0.0).tolist() == [pytest.approx([0.6, 0.5])]   # alpha 0: Q^pi alone
