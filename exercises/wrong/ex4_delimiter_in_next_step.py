"""Steps counted with the delimiter included (cumsum without subtracting the token's own end): the newline gets the
next step's reward, the off-by-one this exercise is about. Caught by test_the_delimiter_belongs_to_the_step_it_ends."""


def token_rewards(step_rewards, step_end, mask):
    step = step_end.long().cumsum(-1).clamp(max=step_rewards.shape[1] - 1)
    return step_rewards.gather(1, step) * mask
