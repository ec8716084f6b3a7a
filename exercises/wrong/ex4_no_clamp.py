"""No clamp: padding after a row that has all H steps points at step H + 1, past the end of step_rewards. Caught by
test_a_row_with_all_h_steps."""


def token_rewards(step_rewards, step_end, mask):
    ends = step_end.long()
    return step_rewards.gather(1, ends.cumsum(-1) - ends) * mask
