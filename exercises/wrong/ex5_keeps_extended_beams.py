"""The whole pool competes, unfinished beams too: a beam that was extended survives beside its own children. Caught by
test_unfinished_beams_of_the_pool_are_replaced_by_their_children."""


def beam_step(pool, candidates, width):
    return sorted(pool + candidates, key=lambda b: (-b[1], not b[2]))[:width]
