"""Step starts from step_end.roll(1): roll wraps the last column round to the first, so a row whose last column ends a
step starts in step 2. Caught by test_one_step_per_token."""


def token_rewards(step_rewards, step_end, mask):
    step = step_end.long().roll(1, -1).cumsum(-1).clamp(max=step_rewards.shape[1] - 1)
    return step_rewards.gather(1, step) * mask
