"""Only alpha * A_t detached: the outcome term and its baseline still carry a gradient when the outcomes do (a learned
score, say). Caught by test_gradient_flows_through_logp_only."""


def reinforce_loss(logp, outcomes, step_adv, mask, group, alpha):
    g = outcomes.view(-1, group)
    baseline = ((g.sum(1, keepdim=True) - g) / (group - 1)).view(-1)
    rewards = (outcomes - baseline)[:, None] + alpha * step_adv.detach()
    mask = mask.float()
    return -(logp * rewards * mask).sum() / mask.sum()
