"""Step starts made by shifting step_end in place: the rewards are right, the caller's step_end is not. Caught by
test_inputs_unchanged."""


def token_rewards(step_rewards, step_end, mask):
    starts = step_end                                   # the same tensor, not a copy
    starts[:, 1:] = step_end[:, :-1].clone()
    starts[:, 0] = False
    step = starts.long().cumsum(-1).clamp(max=step_rewards.shape[1] - 1)
    return step_rewards.gather(1, step) * mask
