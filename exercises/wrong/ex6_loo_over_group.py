"""The other responses' sum divided by the group size, not by the group size - 1. Caught by test_hand_computed_loss."""


def reinforce_loss(logp, outcomes, step_adv, mask, group, alpha):
    g = outcomes.view(-1, group)
    baseline = ((g.sum(1, keepdim=True) - g) / group).view(-1)
    rewards = ((outcomes - baseline)[:, None] + alpha * step_adv).detach()
    mask = mask.float()
    return -(logp * rewards * mask).sum() / mask.sum()
