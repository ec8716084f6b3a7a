"""Only the candidates compete: a finished response drops out of the pool at the next depth. Caught by
test_the_docstring_example."""


def beam_step(pool, candidates, width):
    return sorted(candidates, key=lambda b: (-b[1], not b[2]))[:width]
