"""The rollout engine `pav.sample` against plain full forwards of a tiny random Llama (no cache, no padding)."""

import math

import pytest
import torch

import data
import pav
from conftest import tiny_llama

EOS, BOS, PAD, NL = 17, 18, 19, 16      # arith tokenizer ids


@pytest.fixture(scope="module")
def model():
    return tiny_llama(20)


def prefixes_of(arith, texts):
    return [arith.tokenizer.encode(t, add_special_tokens=True) for t in texts]


PREFIX_TEXTS = ["Q:5+6-0+8+5\n", "Q:1+2+3+4+5\n5+2=7\n7+3=0\n", "Q:9-9+9-9+9\n9-9=0\n0+9=9\n9-9=0\n9+9=8\nA:", ""]


@torch.no_grad()
def teacher_forced(model, prefix, tokens, temperature=1.0):
    """Log-probs of `tokens` after `prefix` from one full forward of the unpadded sequence, and the full logits."""
    seq = torch.tensor([prefix + tokens])
    logits = model(input_ids=seq).logits[0, len(prefix) - 1:-1].float()    # (len(tokens), V)
    logp = torch.log_softmax(logits / temperature, -1)
    return logp.gather(1, torch.tensor(tokens)[:, None]).squeeze(1), logits


def rows(r):
    """Each row's valid tokens and log-probs as lists, after checking that the mask is a prefix of the row."""
    out = []
    for ids, lp, m in zip(r.ids, r.logprobs, r.mask):
        L = int(m.sum())
        assert m[:L].all() and not m[L:].any()
        assert (ids[L:] == PAD).all() and (lp[L:] == 0).all()
        out.append((ids[:L].tolist(), lp[:L]))
    return out


def sample(model, prefixes, **kw):
    kw = {"max_new_tokens": 12, "eos_id": EOS, "pad_id": PAD, **kw}
    return pav.sample(model, prefixes, **kw)


# --------------------------------------------------------------------------------------------------------------
# Log-probs, branching, padding

@pytest.mark.parametrize("attn,check_every,temperature", [("sdpa", 4, 1.0), ("sdpa", 1, 1.0), ("eager", 3, 1.0),
                                                          ("sdpa", 4, 0.7)])
def test_branching_logprobs_match_teacher_forcing(arith, attn, check_every, temperature):
    """n = 5 continuations of prefixes of different lengths (left padding, shared encodings, dropped rows)."""
    model = tiny_llama(20, attn=attn)
    prefixes = prefixes_of(arith, PREFIX_TEXTS)
    r = sample(model, prefixes, n=5, max_new_tokens=14, temperature=temperature, check_every=check_every,
               generator=torch.Generator().manual_seed(1))
    assert r.ids.shape[0] == 20 and r.source.tolist() == [i // 5 for i in range(20)]
    lengths = []
    for i, (tokens, lp) in enumerate(rows(r)):
        assert len(tokens) >= 1
        want, _ = teacher_forced(model, prefixes[r.source[i]], tokens, temperature)
        torch.testing.assert_close(lp, want, atol=1e-4, rtol=0)
        assert (EOS not in tokens[:-1]) and (tokens[-1] == EOS or len(tokens) == 14)
        lengths.append(len(tokens))
    assert len(set(lengths)) > 2                         # rows ended at different times: dropping was exercised
    assert len({tuple(t) for t, _ in rows(r)}) > 10      # the 5 branches of a prefix differ


def test_sampling_distribution_is_softmax_over_temperature(arith, model):
    """One-token samples from one prefix: frequencies match softmax(logits / T), log-probs are the tempered ones."""
    prefix = prefixes_of(arith, ["Q:1+2+3+4+5\n1+"])[0]
    _, logits = teacher_forced(model, prefix, [0])
    for temperature in (1.0, 0.6):
        n = 20_000
        r = sample(model, [prefix], n=n, max_new_tokens=1, temperature=temperature,
                   generator=torch.Generator().manual_seed(2))
        p = torch.softmax(logits[0] / temperature, -1)                      # (V,)
        freq = torch.bincount(r.ids[:, 0], minlength=20).double() / n
        se = (p * (1 - p) / n).sqrt()
        assert ((freq - p).abs() <= 4 * se + 1e-9).all()
        torch.testing.assert_close(r.logprobs[:, 0], p.log()[r.ids[:, 0]], atol=1e-4, rtol=0)


def test_left_padding_does_not_change_a_row(arith, model):
    """A short prefix alone and in a batch with longer ones: the same greedy tokens and log-probs."""
    short = prefixes_of(arith, ["Q:5+6-0+8+5\n"])[0]
    long = prefixes_of(arith, PREFIX_TEXTS)
    alone = sample(model, [short], n=2, temperature=0.0, max_new_tokens=20)
    batched = sample(model, long[1:3] + [short] + long[1:2], n=2, temperature=0.0, max_new_tokens=20)
    a, b = rows(alone), rows(batched)
    for i in range(2):
        assert a[i][0] == b[4 + i][0]
        torch.testing.assert_close(a[i][1], b[4 + i][1], atol=1e-5, rtol=0)
    # and at temperature 1: every row of a padded batch has its unpadded teacher-forced log-probs
    r = sample(model, long[1:3] + [short], n=3, generator=torch.Generator().manual_seed(3))
    for i, (tokens, lp) in enumerate(rows(r)):
        torch.testing.assert_close(lp, teacher_forced(model, (long[1:3] + [short])[r.source[i]], tokens)[0],
                                   atol=1e-4, rtol=0)


@torch.no_grad()
def greedy_by_hand(model, prefix, limit):
    seq, out = list(prefix), []
    while len(out) < limit:
        out.append(int(model(input_ids=torch.tensor([seq])).logits[0, -1].argmax()))
        seq.append(out[-1])
        if out[-1] == EOS:
            break
    return out


def test_temperature_zero_is_argmax_decoding(arith, model):
    prefixes = prefixes_of(arith, PREFIX_TEXTS)
    limits = [20, 9, 5, 28]
    for check_every in (1, 3, 100):
        r = sample(model, prefixes, n=2, temperature=0.0, max_new_tokens=limits, check_every=check_every)
        got = rows(r)
        for i, (tokens, lp) in enumerate(got):
            assert tokens == greedy_by_hand(model, prefixes[i // 2], limits[i // 2])
            assert lp.abs().max() < 1e-4                                    # the greedy choice has probability 1


def test_same_seed_same_samples(arith, model):
    prefixes = prefixes_of(arith, PREFIX_TEXTS)
    runs = []
    for seed, global_seed in [(5, 0), (5, 1), (6, 0)]:
        torch.manual_seed(global_seed)                                      # the generator alone decides
        runs.append(sample(model, prefixes, n=4, generator=torch.Generator().manual_seed(seed)))
    for field in ("ids", "logprobs", "mask", "source"):
        assert torch.equal(getattr(runs[0], field), getattr(runs[1], field))
    assert not torch.equal(runs[0].ids, runs[2].ids)


# --------------------------------------------------------------------------------------------------------------
# Stopping: delimiter, EOS, per-prefix limits

def test_one_step_mode_stops_at_the_delimiter(arith, model):
    table = data.step_end_table(arith.tokenizer, "\n")
    prefixes = prefixes_of(arith, PREFIX_TEXTS)
    limits = [3, 12, 6, 1]
    # temperature 3 makes "\n" and EOS likely enough that rows end all three ways
    r = sample(model, prefixes, n=16, max_new_tokens=limits, temperature=3.0, stop_table=table,
               generator=torch.Generator().manual_seed(4))
    how = set()
    for i, (tokens, _) in enumerate(rows(r)):
        limit = limits[r.source[i]]
        assert 1 <= len(tokens) <= limit
        assert not table[tokens[:-1]].any()                                 # no earlier step end
        assert table[tokens[-1]] or len(tokens) == limit                    # ended by a step end or the limit
        how.add("eos" if tokens[-1] == EOS else "newline" if tokens[-1] == NL else "limit")
    assert how == {"eos", "newline", "limit"}
    # the same rows through data.step_ends: exactly one step, ending at the last valid token
    ends = data.step_ends(r.ids, r.mask, table)                            # (N, T)
    last = torch.zeros_like(ends)
    last[torch.arange(len(last)), r.mask.sum(-1) - 1] = True
    assert torch.equal(ends, last)


def test_per_prefix_limits_are_honoured(arith, model):
    prefixes = prefixes_of(arith, PREFIX_TEXTS)
    limits = [1, 4, 7, 2]
    r = sample(model, prefixes, n=12, max_new_tokens=limits, temperature=2.0,
               generator=torch.Generator().manual_seed(5))
    assert r.ids.shape[1] <= 7
    at_limit = 0
    for i, (tokens, _) in enumerate(rows(r)):
        limit = limits[r.source[i]]
        assert 1 <= len(tokens) <= limit
        assert EOS not in tokens[:-1] and (tokens[-1] == EOS or len(tokens) == limit)
        at_limit += len(tokens) == limit and tokens[-1] != EOS
    assert at_limit > 10


def test_zero_limit_gives_an_empty_row(arith, model):
    prefixes = prefixes_of(arith, PREFIX_TEXTS[:2])
    r = sample(model, prefixes, max_new_tokens=[0, 3], temperature=0.0)
    assert r.mask[0].sum() == 0 and (r.ids[0] == PAD).all() and (r.logprobs[0] == 0).all()
    greedy = sample(model, prefixes[1:], max_new_tokens=3, temperature=0.0)
    assert rows(r)[1][0] == rows(greedy)[0][0]                              # the other row is unaffected
    r = sample(model, prefixes, n=3, max_new_tokens=[0, 0])                 # every row finished before it starts
    assert not r.mask.any() and r.ids.shape[0] == 6


def test_banned_tokens_are_never_sampled(arith):
    """BOS and PAD (special_ids' banned list) never appear, though the random model gives them real mass."""
    ids = data.special_ids(arith.tokenizer)
    assert ids == {"eos_id": EOS, "pad_id": PAD, "banned": [BOS, PAD], "vocab": 20}
    model = tiny_llama(20)
    prefixes = prefixes_of(arith, PREFIX_TEXTS[:2])
    free = sample(model, prefixes, n=64, max_new_tokens=12, generator=torch.Generator().manual_seed(0))
    assert any(BOS in toks or PAD in toks for toks, _ in rows(free))        # the ban has something to do
    r = pav.sample(model, prefixes, n=64, max_new_tokens=12, generator=torch.Generator().manual_seed(0), **ids)
    assert not r.ids[r.mask].eq(BOS).any() and not r.ids[r.mask].eq(PAD).any()
    # the log-probs are those of the renormalised distribution over the allowed tokens
    for i in (0, 64):
        L = int(r.mask[i].sum())
        toks, lp = r.ids[i, :L].tolist(), r.logprobs[i, :L]
        logits = teacher_forced(model, prefixes[i // 64], toks)[1]          # (len, V)
        logits[:, [BOS, PAD]] = -math.inf
        want = torch.log_softmax(logits, -1).gather(1, torch.tensor(toks)[:, None]).squeeze(1)
        assert torch.allclose(lp, want, atol=1e-4)


def test_logprobs_are_zero_on_padding_when_pad_is_banned(arith, model):
    prefixes = prefixes_of(arith, PREFIX_TEXTS[:2])
    r = pav.sample(model, prefixes, n=16, max_new_tokens=12, generator=torch.Generator().manual_seed(0),
                   **data.special_ids(arith.tokenizer))
    assert (~r.mask).any()
    assert (r.logprobs[~r.mask] == 0).all()


# --------------------------------------------------------------------------------------------------------------
# No host sync inside the token loop

SYNCS = ["item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__float__", "__index__", "nonzero"]


class SyncCounter:
    """Counts host-syncing tensor calls made after the model's first forward (the prefix encoding) returns."""

    def __init__(self, monkeypatch, model, per_forward=None):
        self.on, self.calls, self.forwards = False, [], 0
        for name in SYNCS:
            monkeypatch.setattr(torch.Tensor, name, self.wrap(name, getattr(torch.Tensor, name)))
        monkeypatch.setattr(torch, "nonzero", self.wrap("torch.nonzero", torch.nonzero))
        forward = model.forward

        def counted_forward(*args, **kwargs):
            out = forward(*args, **kwargs)
            self.forwards += 1
            if per_forward is not None and self.on:
                per_forward(out)
            self.on = True
            return out

        monkeypatch.setattr(model, "forward", counted_forward)

    def wrap(self, name, fn):
        def counted(*args, **kwargs):
            if self.on:
                self.calls.append(name)
            return fn(*args, **kwargs)
        return counted


@pytest.mark.parametrize("T,k", [(12, 4), (13, 4), (10, 1), (9, 3)])
def test_no_host_sync_in_the_token_loop(arith, model, monkeypatch, T, k):
    prefixes = prefixes_of(arith, PREFIX_TEXTS)
    counter = SyncCounter(monkeypatch, model)
    r = sample(model, prefixes, n=3, max_new_tokens=T, check_every=k, temperature=0.5,
               stop_table=torch.zeros(20, dtype=torch.bool), generator=torch.Generator().manual_seed(0))
    counter.on = False
    monkeypatch.undo()
    assert r.ids.shape[1] == T                                              # the loop ran to the end
    assert counter.forwards == T                                            # one prefill + T - 1 decode steps
    assert len(counter.calls) <= math.ceil(T / k), counter.calls


def test_the_sync_counter_catches_a_per_token_item(arith, model, monkeypatch):
    """The harness above fails a loop that calls .item() once per token."""
    prefixes = prefixes_of(arith, PREFIX_TEXTS)
    counter = SyncCounter(monkeypatch, model, per_forward=lambda out: out.logits[0, -1, 0].item())
    sample(model, prefixes, n=3, max_new_tokens=12, check_every=4, generator=torch.Generator().manual_seed(0))
    counter.on = False
    monkeypatch.undo()
    assert len(counter.calls) > math.ceil(12 / 4)
