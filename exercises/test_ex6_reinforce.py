import pytest
import torch

EXERCISE = "ex6_reinforce"


def test_hand_computed_loss(ex):
    logp = torch.tensor([[-0.5, -1.0], [-0.2, -0.4], [-1.0, -2.0], [-0.1, -0.3]])
    outcomes = torch.tensor([1.0, 0.0, 0.0, 0.0])       # two groups of two: (1, 0) and (0, 0)
    step_adv = torch.tensor([[0.1, 0.2], [-0.1, 0.0], [0.3, 0.3], [0.0, -0.5]])
    mask = torch.tensor([[1, 1], [1, 0], [1, 1], [1, 1]]).bool()
    # baselines (1, 0) -> (0, 1); (0, 0) -> (0, 0). Token rewards with alpha 2:
    #   row 0: 1 + 0.2 = 1.2, 1 + 0.4 = 1.4; row 1: -1 - 0.2 = -1.2 (its second token is padding)
    #   row 2: 0.6, 0.6; row 3: 0.0, -1.0
    # sum of logp * r = -0.6 - 1.4 + 0.24 - 0.6 - 1.2 + 0 + 0.3 = -3.26 over 7 tokens
    loss = ex.reinforce_loss(logp, outcomes, step_adv, mask, group=2, alpha=2.0)
    assert float(loss) == pytest.approx(3.26 / 7)


def test_hand_computed_loss_groups_of_three(ex):
    logp = torch.tensor([[-1.0], [-2.0], [-3.0], [-4.0], [-5.0], [-6.0]])
    outcomes = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0, 0.0])   # two groups of three: (1, 1, 0) and (1, 0, 0)
    # baselines (0.5, 0.5, 1) and (0, 0.5, 0.5); rewards (0.5, 0.5, -1) and (1, -0.5, -0.5)
    # sum of logp * r = -0.5 - 1 + 3 - 4 + 2.5 + 3 = 3 over 6 tokens
    loss = ex.reinforce_loss(logp, outcomes, torch.ones(6, 1), torch.ones(6, 1).bool(), group=3, alpha=0.0)
    assert float(loss) == pytest.approx(-3 / 6)


def test_gradient_flows_through_logp_only(ex):
    logp = torch.tensor([[-0.5, -1.0], [-0.2, -0.4]], requires_grad=True)
    outcomes = torch.tensor([1.0, 0.0], requires_grad=True)   # as if a learned score: still a constant here
    step_adv = torch.tensor([[0.5, 0.5], [0.0, 0.0]], requires_grad=True)
    loss = ex.reinforce_loss(logp, outcomes, step_adv, torch.ones(2, 2).bool(), group=2, alpha=1.0)
    loss.backward()
    # d loss / d logp_it = -r_it / 4: rewards (1.5, 1.5) and (-1, -1)
    assert logp.grad.tolist() == [pytest.approx([-0.375, -0.375]), pytest.approx([0.25, 0.25])]
    assert step_adv.grad is None or float(step_adv.grad.abs().sum()) == 0.0
    assert outcomes.grad is None or float(outcomes.grad.abs().sum()) == 0.0


def test_alpha_zero_is_outcome_only_reinforce(ex):
    logp = torch.randn(8, 5)
    outcomes = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0])
    adv = torch.randn(8, 5)
    mask = torch.ones(8, 5).bool()
    a = ex.reinforce_loss(logp, outcomes, adv, mask, group=4, alpha=0.0)
    b = ex.reinforce_loss(logp, outcomes, torch.zeros(8, 5), mask, group=4, alpha=0.0)
    assert float(a) == pytest.approx(float(b))


def test_inputs_unchanged(ex):
    inputs = [torch.tensor([[-0.5], [-0.2]]), torch.tensor([1.0, 0.0]), torch.tensor([[0.5], [0.25]]),
              torch.ones(2, 1).bool()]                                    # logp, outcomes, step_adv, mask
    before = [x.clone() for x in inputs]
    ex.reinforce_loss(*inputs, group=2, alpha=3.0)
    assert all(torch.equal(x, y) for x, y in zip(inputs, before))
