import torch

EXERCISE = "ex4_token_rewards"


def test_the_delimiter_belongs_to_the_step_it_ends(ex):
    # "1+2=3\nA:3" and its EOS (10 tokens) then two pads; "5\n6" then nine pads (a last step that hit the length
    # limit: no EOS)
    step_end = torch.tensor([[0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0],
                             [0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]]).bool()
    mask = torch.tensor([[1] * 10 + [0] * 2, [1] * 3 + [0] * 9]).bool()
    step_rewards = torch.tensor([[1.0, -2.0, 7.0], [0.5, 0.25, 7.0]])   # (N, H); step 3 of either row does not exist
    got = ex.token_rewards(step_rewards, step_end, mask)
    assert got.tolist() == [[1.0] * 6 + [-2.0] * 4 + [0.0] * 2,
                            [0.5, 0.5, 0.25] + [0.0] * 9]


def test_one_step_per_token(ex):
    """Every token its own step (the planted task): the rewards land one to one."""
    step_end = torch.ones(1, 4).bool()
    got = ex.token_rewards(torch.tensor([[1.0, 2.0, 3.0, 4.0]]), step_end, torch.ones(1, 4).bool())
    assert got.tolist() == [[1.0, 2.0, 3.0, 4.0]]


def test_a_row_with_all_h_steps(ex):
    """H is the largest number of steps of any row; padding after a row that has all H steps is still padding."""
    step_end = torch.tensor([[0, 1, 1, 0], [1, 0, 0, 0]]).bool()         # 2 steps then a pad; 1 step then pads
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]]).bool()
    got = ex.token_rewards(torch.tensor([[1.0, 2.0], [3.0, 9.0]]), step_end, mask)
    assert got.tolist() == [[1.0, 1.0, 2.0, 0.0], [3.0, 0.0, 0.0, 0.0]]


def test_inputs_unchanged(ex):
    inputs = [torch.tensor([[1.0, 2.0]]), torch.tensor([[0, 1, 0, 1]]).bool(), torch.ones(1, 4).bool()]
    before = [x.clone() for x in inputs]                                  # step_rewards, step_end, mask
    ex.token_rewards(*inputs)
    assert all(torch.equal(x, y) for x, y in zip(inputs, before))
