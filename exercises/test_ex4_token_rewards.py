import torch

EXERCISE = "ex4_token_rewards"


def test_the_delimiter_belongs_to_the_step_it_ends(ex):
    # "1+2=3\nA:3" and its EOS (10 tokens) then two pads; "5\n6" then nine pads (a last step that hit the length
    # limit: no EOS)
    step_end = torch.tensor([[0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0],
                             [0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]]).bool()
    mask = torch.tensor([[1] * 10 + [0] * 2, [1] * 3 + [0] * 9]).bool()
    step_rewards = torch.tensor([[1.0, -2.0, 7.0], [0.5, 0.25, 7.0]])   # (N, H); step 3 of row 0 does not exist
    got = ex.token_rewards(step_rewards, step_end, mask)
    assert got.tolist() == [[1.0] * 6 + [-2.0] * 4 + [0.0] * 2,
                            [0.5, 0.5, 0.25] + [0.0] * 9]


def test_one_step_per_token(ex):
    """Every token its own step (the planted task): the rewards land one to one."""
    step_end = torch.ones(1, 4).bool()
    got = ex.token_rewards(torch.tensor([[1.0, 2.0, 3.0, 4.0]]), step_end, torch.ones(1, 4).bool())
    assert got.tolist() == [[1.0, 2.0, 3.0, 4.0]]
