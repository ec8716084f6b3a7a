"""A problem's rows taken as strided (i, i + N / group, ...) instead of adjacent. Caught by test_hand_computed_loss."""


def reinforce_loss(logp, outcomes, step_adv, mask, group, alpha):
    g = outcomes.view(group, -1)                                         # (group, N / group): a problem per column
    baseline = ((g.sum(0, keepdim=True) - g) / (group - 1)).reshape(-1)
    rewards = ((outcomes - baseline)[:, None] + alpha * step_adv).detach()
    mask = mask.float()
    return -(logp * rewards * mask).sum() / mask.sum()
