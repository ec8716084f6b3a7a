"""The candidates listed before the pool's finished beams: at a tie a new finished candidate beats an old one. Caught
by test_ties_and_order."""


def beam_step(pool, candidates, width):
    return sorted(candidates + [b for b in pool if b[2]], key=lambda b: (-b[1], not b[2]))[:width]
