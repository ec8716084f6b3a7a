"""Identical candidates merged into one (dict.fromkeys): two samples of the same step are two candidates, and the
merged one frees a slot for a worse beam. Caught by test_identical_candidates_are_all_kept."""


def beam_step(pool, candidates, width):
    competing = list(dict.fromkeys([b for b in pool if b[2]] + candidates))
    return sorted(competing, key=lambda b: (-b[1], not b[2]))[:width]
