"""cumsum - 1: the token after a delimiter still gets the step that just ended. Caught by
test_the_delimiter_belongs_to_the_step_it_ends."""


def token_rewards(step_rewards, step_end, mask):
    step = (step_end.long().cumsum(-1) - 1).clamp(min=0, max=step_rewards.shape[1] - 1)
    return step_rewards.gather(1, step) * mask
