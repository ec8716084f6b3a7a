"""Sorted by score alone: at a tie an unfinished candidate can push out a finished one. Caught by
test_ties_and_order."""


def beam_step(pool, candidates, width):
    return sorted([b for b in pool if b[2]] + candidates, key=lambda b: -b[1])[:width]
