"""Solution to exercise 5 (see exercises/ex5_beam_step.py)."""


def beam_step(pool: list, candidates: list, width: int) -> list:
    competing = [b for b in pool if b[2]] + list(candidates)             # finished responses stay in the running
    # best score first; at a tie a finished response first, then the earlier one (sorted() is stable)
    return sorted(competing, key=lambda b: (-b[1], not b[2]))[:width]
