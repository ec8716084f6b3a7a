"""outcomes.view(group, -1): groups of N / group adjacent rows, which are the problems only when N = group^2. Caught by
test_hand_computed_loss_groups_of_three."""


def reinforce_loss(logp, outcomes, step_adv, mask, group, alpha):
    g = outcomes.view(group, -1)
    baseline = ((g.sum(1, keepdim=True) - g) / (group - 1)).reshape(-1)
    rewards = ((outcomes - baseline)[:, None] + alpha * step_adv).detach()
    mask = mask.float()
    return -(logp * rewards * mask).sum() / mask.sum()
