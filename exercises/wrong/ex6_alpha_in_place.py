"""step_adv *= alpha: the loss is right, but the caller's advantages are now scaled (twice, on the next call). Caught
by test_inputs_unchanged."""


def reinforce_loss(logp, outcomes, step_adv, mask, group, alpha):
    g = outcomes.view(-1, group)
    baseline = ((g.sum(1, keepdim=True) - g) / (group - 1)).view(-1)
    step_adv *= alpha
    rewards = ((outcomes - baseline)[:, None] + step_adv).detach()
    mask = mask.float()
    return -(logp * rewards * mask).sum() / mask.sum()
