"""Ties broken by the response text ("deterministic"), not by where the beam came from. Caught by
test_ties_and_order."""


def beam_step(pool, candidates, width):
    return sorted([b for b in pool if b[2]] + candidates, key=lambda b: (-b[1], not b[2], b[0]))[:width]
