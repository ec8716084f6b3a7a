"""Exercise 5: one step of beam search over reasoning steps (section 4.1).

[Beam search](../docs/glossary.md#beam-search) keeps `width` partial responses (beams) per problem. At every depth each
unfinished beam samples C next steps; every candidate is scored (with the [PAV](../docs/glossary.md#pav): the
[effective reward](../docs/glossary.md#effective-reward) of its newest step, Eq. 5), and the best `width` survive. A
finished response is never extended, but it stays in the pool and competes with the new candidates at every later depth,
keeping the score it had.

A beam here is a tuple (response, score, done). Implement `beam_step(pool, candidates, width)`: `pool` is the pool of
the previous depth, `candidates` the scored children of its unfinished beams (in the order they were sampled). Return
the new pool, best first: the finished beams of `pool` and all `candidates`, sorted by score, the top `width` of them.
Identical candidates (two samples of the same step) are all kept. Ties: a finished response before an unfinished one;
otherwise the finished beams of the pool before the candidates, and each in its order (a stable sort does that). Leave
`pool` and `candidates` as they were. Check yourself with width 2, pool [("a", 0.9, True), ("b", 0.5, False)] and
candidates [("bx", 0.9, False), ("by", 0.7, True)]: the new pool is [("a", 0.9, True), ("bx", 0.9, False)].
"""


def beam_step(pool: list, candidates: list, width: int) -> list:
    raise NotImplementedError("exercise 5: your code here")
