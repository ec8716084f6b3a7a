"""The rewards not detached: the gradient also pushes the step advantages (and outcomes), which are data. Caught by
test_gradient_flows_through_logp_only."""


def reinforce_loss(logp, outcomes, step_adv, mask, group, alpha):
    g = outcomes.view(-1, group)
    baseline = ((g.sum(1, keepdim=True) - g) / (group - 1)).view(-1)
    rewards = (outcomes - baseline)[:, None] + alpha * step_adv
    mask = mask.float()
    return -(logp * rewards * mask).sum() / mask.sum()
