"""`out = q` then in-place operations: `out` is q itself, so the caller's Q^pi becomes 1 - Q^pi. Caught by
test_input_unchanged."""


def bok_closed(q, k):
    out = q
    out.neg_().add_(1).pow_(k)           # (1 - Q)^K, written into q
    return 1 - out
