"""At a tie, unfinished before finished (the key's second entry the wrong way round). Caught by test_ties_and_order."""


def beam_step(pool, candidates, width):
    return sorted([b for b in pool if b[2]] + candidates, key=lambda b: (-b[1], b[2]))[:width]
