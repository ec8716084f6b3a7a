"""The new pool built in the caller's `pool` list (filtered, extended and sorted in place). Caught by
test_inputs_unchanged."""


def beam_step(pool, candidates, width):
    pool[:] = [b for b in pool if b[2]]
    pool += candidates
    pool.sort(key=lambda b: (-b[1], not b[2]))
    return pool[:width]
