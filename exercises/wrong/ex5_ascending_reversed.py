"""Sorted ascending, then reversed: the best first, but equal beams come out last-first. Caught by
test_ties_and_order."""


def beam_step(pool, candidates, width):
    return sorted([b for b in pool if b[2]] + candidates, key=lambda b: (b[1], b[2]))[::-1][:width]
