"""The baseline is the group's mean including response i itself (b_i then depends on Rex_i). Caught by
test_hand_computed_loss."""


def reinforce_loss(logp, outcomes, step_adv, mask, group, alpha):
    baseline = outcomes.view(-1, group).mean(1).repeat_interleave(group)
    rewards = ((outcomes - baseline)[:, None] + alpha * step_adv).detach()
    mask = mask.float()
    return -(logp * rewards * mask).sum() / mask.sum()
