"""The leave-one-out mean over the whole batch, not over the response's own group (other problems' outcomes). Caught
by test_hand_computed_loss."""


def reinforce_loss(logp, outcomes, step_adv, mask, group, alpha):
    baseline = (outcomes.sum() - outcomes) / (len(outcomes) - 1)
    rewards = ((outcomes - baseline)[:, None] + alpha * step_adv).detach()
    mask = mask.float()
    return -(logp * rewards * mask).sum() / mask.sum()
