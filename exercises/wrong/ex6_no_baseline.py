"""No baseline: Rex_i itself. Caught by test_hand_computed_loss."""


def reinforce_loss(logp, outcomes, step_adv, mask, group, alpha):
    rewards = (outcomes[:, None] + alpha * step_adv).detach()
    mask = mask.float()
    return -(logp * rewards * mask).sum() / mask.sum()
