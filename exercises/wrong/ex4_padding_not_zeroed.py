"""Padding keeps the reward its index points to. Caught by test_the_delimiter_belongs_to_the_step_it_ends."""


def token_rewards(step_rewards, step_end, mask):
    ends = step_end.long()
    step = (ends.cumsum(-1) - ends).clamp(max=step_rewards.shape[1] - 1)
    return step_rewards.gather(1, step)
