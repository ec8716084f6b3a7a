"""Exercise 4: per-step rewards placed on tokens (the reward of Eq. 5 in RL).

The policy gradient of Eq. 5 weights log pi(a_h | s_h) by step h's
[effective reward](../docs/glossary.md#effective-reward). A [step](../docs/glossary.md#step) is several tokens, and
log pi(a_h | s_h) is the sum of its tokens' log-probabilities, so every token of step h gets step h's reward.

Steps end at a delimiter token (a newline on arith): the delimiter that ends step h belongs to step h, not to the next
step. A response (one row) is right-padded; `step_end` (N, T) is True at the last token of every step (the delimiters,
and the response's last real token, which ends its last step) and `mask` (N, T) is True on real tokens.

Implement `token_rewards(step_rewards, step_end, mask)`: step_rewards (N, H) -> (N, T), each real token's reward is the
reward of the step it belongs to, and padding gets 0. H is the largest number of steps of any row (a row with fewer
steps leaves its last entries unused); leave the inputs as they were. Check yourself on "1+2=3\\nA:3": the arith
tokenizer gives one token per character, 9 tokens, and the EOS token that ends the response is a real token too (the
policy chose it), so the row has 10 real tokens. Steps end at the newline, index 5, and at the EOS, index 9 (the last
real token): tokens 0..5 get step 1's reward, tokens 6..9 ("A", ":", "3", EOS) step 2's. Getting the boundary one token
off gives the newline the next step's reward: the lesson of this exercise.
Then run it in rl.py's loop: `python exercises/experiments.py rl` and `reward-q` (with exercises 1 and 3).
"""

import torch


def token_rewards(step_rewards: torch.Tensor, step_end: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    raise NotImplementedError("exercise 4: your code here")
