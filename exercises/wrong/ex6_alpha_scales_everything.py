"""alpha * ((Rex - b) + A): alpha scales the outcome term too (and alpha = 0 then learns nothing). Caught by
test_hand_computed_loss."""


def reinforce_loss(logp, outcomes, step_adv, mask, group, alpha):
    g = outcomes.view(-1, group)
    baseline = ((g.sum(1, keepdim=True) - g) / (group - 1)).view(-1)
    rewards = (alpha * ((outcomes - baseline)[:, None] + step_adv)).detach()
    mask = mask.float()
    return -(logp * rewards * mask).sum() / mask.sum()
