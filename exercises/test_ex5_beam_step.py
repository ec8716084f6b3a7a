EXERCISE = "ex5_beam_step"


def test_the_docstring_example(ex):
    pool = [("a", 0.9, True), ("b", 0.5, False)]
    candidates = [("bx", 0.9, False), ("by", 0.7, True)]
    assert ex.beam_step(pool, candidates, 2) == [("a", 0.9, True), ("bx", 0.9, False)]


def test_unfinished_beams_of_the_pool_are_replaced_by_their_children(ex):
    pool = [("a", 0.99, False), ("b", 0.1, True)]
    candidates = [("ax", 0.2, False), ("ay", 0.05, True)]
    # "a" itself does not survive: it was extended, and only its children compete
    assert ex.beam_step(pool, candidates, 3) == [("ax", 0.2, False), ("b", 0.1, True), ("ay", 0.05, True)]


def test_ties_and_order(ex):
    candidates = [("c1", 0.5, False), ("c2", 0.5, True), ("c3", 0.5, False), ("c4", 0.6, False)]
    assert ex.beam_step([], candidates, 3) == [("c4", 0.6, False), ("c2", 0.5, True), ("c1", 0.5, False)]
    assert ex.beam_step([("f", 0.5, True)], candidates, 2) == [("c4", 0.6, False), ("f", 0.5, True)]
    assert ex.beam_step([], candidates, 10) == [("c4", 0.6, False), ("c2", 0.5, True), ("c1", 0.5, False),
                                               ("c3", 0.5, False)]


def test_identical_candidates_are_all_kept(ex):
    """Two samples of the same step are two candidates (a confident policy repeats itself)."""
    candidates = [("ax", 0.8, False), ("ax", 0.8, False), ("ay", 0.3, False)]
    assert ex.beam_step([], candidates, 2) == [("ax", 0.8, False), ("ax", 0.8, False)]


def test_inputs_unchanged(ex):
    pool = [("a", 0.9, True), ("b", 0.5, False)]
    candidates = [("bx", 0.1, False), ("by", 0.7, True)]
    ex.beam_step(pool, candidates, 1)
    assert pool == [("a", 0.9, True), ("b", 0.5, False)] and candidates == [("bx", 0.1, False), ("by", 0.7, True)]
