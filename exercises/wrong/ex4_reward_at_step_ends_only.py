"""Each step's reward on its last token only, 0 on the others (log pi(a_h | s_h) sums all of the step's tokens, so
all of them carry it). Caught by test_the_delimiter_belongs_to_the_step_it_ends."""

import torch


def token_rewards(step_rewards, step_end, mask):
    out = torch.zeros(step_end.shape, dtype=step_rewards.dtype)
    for i in range(step_end.shape[0]):
        ends = step_end[i].nonzero().squeeze(1)
        out[i, ends] = step_rewards[i, :len(ends)]
    return out * mask
