"""pav.py's Monte Carlo layer: Best-of-K estimates, advantages, Q_hat, and success counts from a deterministic model."""

import math
import random

import pytest
import torch

import data
import pav
from benchmarks import prover_table
from conftest import bigram_llama


# --------------------------------------------------------------------------------------------------------------
# Best-of-K

def binom_pmf(c, n, q):
    return math.comb(n, c) * q ** c * (1 - q) ** (n - c)


@pytest.mark.parametrize("n,K", [(1, 1), (4, 1), (4, 2), (4, 4), (16, 4), (32, 8), (32, 16)])
def test_bok_unbiased_is_unbiased(n, K):
    """E_{c ~ Binomial(n, q)} [1 - C(n-c, K)/C(n, K)] = 1 - (1 - q)^K exactly."""
    est = pav.bok_unbiased(torch.arange(n + 1), n, K).double()              # (n + 1,)
    for c in range(n + 1):   # the formula itself, by math.comb
        assert est[c].item() == pytest.approx(1 - math.comb(n - c, K) / math.comb(n, K), abs=1e-7)
    for q in (0.0, 0.01, 0.05, 0.3, 0.7, 1.0):
        mean = sum(binom_pmf(c, n, q) * est[c].item() for c in range(n + 1))
        assert mean == pytest.approx(pav.bok_closed(q, K), abs=1e-6)
        assert pav.bok_closed(q, K) == pytest.approx(1 - (1 - q) ** K, abs=1e-15)


def test_bok_unbiased_edge_cases():
    c = torch.tensor([0.0, 1.0, 5.0, 13.0, 16.0])
    assert torch.allclose(pav.bok_unbiased(c, 16, 1), c / 16)              # K = 1 is Q_hat
    assert pav.bok_unbiased(c, 16, 4)[0].item() == 0.0                      # no successes: 0
    assert pav.bok_unbiased(c, 16, 4)[3:].tolist() == [1.0, 1.0]            # n - c < K: every K-subset has a success
    assert pav.bok_unbiased(torch.tensor([[1.0, 2.0]]), 8, 2).shape == (1, 2)
    with pytest.raises(AssertionError):
        pav.bok_unbiased(c, 4, 8)


@pytest.mark.parametrize("c,n,K", [(1, 8, 2), (3, 16, 4), (2, 32, 8), (10, 32, 16)])
def test_bok_unbiased_against_simulated_best_of_k(c, n, K):
    """Draw K of the n outcomes without replacement, succeed if any is a success; the rate is the estimate."""
    draws = 20_000
    g = torch.Generator().manual_seed(c * 1000 + n * 10 + K)
    picks = torch.rand(draws, n, generator=g).argsort(1)[:, :K]            # (draws, K) uniform K-subsets
    rate = (picks < c).any(1).double().mean().item()                        # outcomes 0..c-1 are the successes
    p = pav.bok_unbiased(torch.tensor([c]), n, K).item()
    assert abs(rate - p) < 4 * math.sqrt(p * (1 - p) / draws) + 1e-9


# --------------------------------------------------------------------------------------------------------------
# Advantages and Q_hat

def test_advantages_hand_example_and_telescoping():
    q = torch.tensor([0.2, 0.5, 0.4, 1.0])
    a = pav.advantages(q)
    assert torch.allclose(a, torch.tensor([0.3, -0.1, 0.6]))
    assert a.sum().item() == pytest.approx(q[-1].item() - q[0].item())
    qb = torch.rand(3, 5, 9, generator=torch.Generator().manual_seed(0))    # (..., H + 1)
    ab = pav.advantages(qb)
    assert ab.shape == (3, 5, 8)
    assert torch.allclose(ab.sum(-1), qb[..., -1] - qb[..., 0], atol=1e-6)
    assert torch.allclose(ab[1, 2, 4], qb[1, 2, 5] - qb[1, 2, 4])


def test_step_cuts(arith, planted):
    tok = arith.tokenizer
    table = data.step_end_table(tok, "\n")
    assert pav.step_cuts(tok.encode("1+2=3\n3+4=7\nA:7") + [tok.eos_token_id], table) == [0, 6, 12, 16]
    assert pav.step_cuts(tok.encode("1+2=3\n3+"), table) == [0, 6, 8]        # the last, cut step ends too
    assert pav.step_cuts([3, 6, 0], data.step_end_table(planted.tokenizer, None)) == [0, 1, 2, 3]


# --------------------------------------------------------------------------------------------------------------
# mc_successes with a deterministic model

# arith ids: digits 0-9, "+" 10, "-" 11, "=" 12, ":" 13, "Q" 14, "A" 15, "\n" 16, EOS 17, BOS 18, PAD 19.
# The model writes "A:4" after any newline, "4" after "A:", and EOS after anything else.
SUCCESSOR = {v: 17 for v in range(20)} | {16: 15, 15: 13, 13: 4}


def follow(tokens, limit):
    """The deterministic model's continuation of a token list, by hand."""
    out = []
    while len(out) < limit:
        out.append(SUCCESSOR[(tokens + out)[-1]])
        if out[-1] == 17:
            break
    return out


def test_bigram_model_is_deterministic(arith):
    model = bigram_llama(20, SUCCESSOR)
    prompt = arith.tokenizer.encode("Q:1+2+3+4+5\n", add_special_tokens=True)
    r = pav.sample(model, [prompt, prompt + [15]], n=3, max_new_tokens=5, eos_id=17, pad_id=19,
                   generator=torch.Generator().manual_seed(0))
    assert r.ids.tolist() == [[15, 13, 4, 17]] * 3 + [[13, 4, 17, 19]] * 3
    assert r.logprobs.abs().max().item() < 1e-6


def test_mc_successes_equals_n_times_outcome(arith, monkeypatch):
    tok = arith.tokenizer
    model = bigram_llama(20, SUCCESSOR)
    problems = arith.problems(200, random.Random(0))
    four = [i for i, p in enumerate(problems) if p.answer == "4"][:3]
    seven = [i for i, p in enumerate(problems) if p.answer == "7"][:3]
    other = [i for i, p in enumerate(problems) if p.answer not in "47"][:3]
    enc = tok.encode
    partial = [[], enc("1+2=3\n"), enc("A:"), enc("A:7"), enc("5+"), enc("1+2=3\n3+4=7\nA")]
    complete = [enc("A:7") + [17], enc("A:4") + [17], enc("A:") + [17],
                enc("1" + "1+1=2\n" * 4 + "A:4"), enc("1" + "1+1=2\n" * 4 + "A:7")]   # 28 tokens: the limit
    assert all(len(p) == arith.max_new_tokens for p in complete[3:])
    prefixes = [(j, p) for j in four + seven + other for p in partial + complete]
    cfg = pav.Config(task="arith", batch_rows=40)                          # 5 prefixes per engine call: chunks

    calls = []
    real_sample = pav.sample

    def recording_sample(model, prefixes, **kw):
        calls.append([list(p) for p in prefixes])
        return real_sample(model, prefixes, **kw)

    monkeypatch.setattr(pav, "sample", recording_sample)
    n = 8
    counts = pav.mc_successes(model, arith, tok, problems, prefixes, n, cfg, generator=torch.Generator().manual_seed(0))
    assert counts.shape == (len(prefixes),)
    want = []
    for j, p in prefixes:
        done = data.is_complete(p, arith, tok)
        y = p if done else p + follow(data.prompt_ids(tok, problems[j]) + p, arith.max_new_tokens - len(p))
        y = y[:y.index(17)] if 17 in y else y
        want.append(n * float(tok.decode(y).split("\n")[-1] == f"A:{problems[j].answer}"))
    assert counts.tolist() == want
    # by hand for a problem whose answer is 4: [] -> "A:4"; "A:7" -> stops; complete prefixes keep their own outcome
    assert counts[:len(partial + complete)].tolist() == [8, 8, 8, 0, 0, 8, 0, 8, 0, 8, 0]
    assert sum(want) > 0 and 0 in want
    # complete prefixes were never sent to the rollout engine, and no call exceeded batch_rows
    sent = [p for c in calls for p in c]
    assert sent == [data.prompt_ids(tok, problems[j]) + p for j, p in prefixes if not data.is_complete(p, arith, tok)]
    assert all(len(c) * n <= cfg.batch_rows for c in calls)


def test_mc_successes_all_complete_never_samples(arith, monkeypatch):
    tok = arith.tokenizer
    problems = [data.Problem("Q:5+6-0+8+5\n", "4")]
    monkeypatch.setattr(pav, "sample", lambda *a, **k: pytest.fail("a complete prefix was rolled out"))
    prefixes = [(0, tok.encode("5+6=1\n1-0=1\n1+8=9\n9+5=4\nA:4") + [17]), (0, tok.encode("A:3") + [17])]
    counts = pav.mc_successes(None, arith, tok, problems, prefixes, 6, pav.Config())
    assert counts.tolist() == [6.0, 0.0]


def test_no_two_random_streams_share_a_seed():
    """Training, evaluation, Pass@N, labels and the rest each draw from a generator of their own: for seeds 0-3 and
    steps (iterations) 0-100 every (stream, seed, step) has its own seed, and the same triple always the same one."""
    seeds = [pav.stream_seed(s, seed, it) for s in pav.STREAMS for seed in range(4) for it in range(101)]
    assert len(set(seeds)) == len(seeds) == len(pav.STREAMS) * 4 * 101
    assert pav.stream_seed("rl", 0, 7) == pav.stream_seed("rl", 0, 7) and 0 <= min(seeds) and max(seeds) < 2 ** 63
    a, b = pav.generator("rl", 0, 1), pav.generator("rl eval", 0, 1)      # the collision rl.py had at seed 0
    assert not torch.equal(torch.rand(8, generator=a), torch.rand(8, generator=b))
    with pytest.raises(AssertionError):
        pav.stream_seed("no such stream", 0)


def test_prover_table_estimators_against_the_exact_terms_of_theorem_3_1(planted):
    """prover_table.theorem_terms on a state whose Q-values are known exactly: pi is planted's procedural gamma = 3 policy (its
    dynamic program gives Q^pi(s, a) for every action), mu = Bo4(pi). From binomial Monte Carlo counts in two halves,
    the estimates average to the exact distinguishability Var_{a~pi}[A^mu] and alignment E_{a~pi}[A^mu A^pi]."""
    gamma, K, n, m, S = 3.0, 4, 32, 4, 40_000
    V = planted.exact_values(gamma)
    s = [3, 6, 0]                                                       # three target tokens matched, 7 tokens left
    pi = planted.prover_probs(gamma)[planted.match_state(s)]           # (15,) pi(a | s)
    q_sa = torch.tensor([planted.exact_q(s + [a], gamma, V) for a in range(15)], dtype=torch.float64)
    q_s = float((pi * q_sa).sum())
    assert q_s == pytest.approx(planted.exact_q(s, gamma, V))           # V^pi(s) = E_a Q^pi(s, a)
    bok = lambda q: 1 - (1 - q) ** K
    a_mu, a_pi = bok(q_sa) - bok(torch.tensor(q_s, dtype=torch.float64)), q_sa - q_s
    exact_var = float((pi * (a_mu - (pi * a_mu).sum()) ** 2).sum())
    exact_align = float((pi * a_mu * a_pi).sum())
    g = torch.Generator().manual_seed(0)
    actions = torch.multinomial(pi.float(), S * m, replacement=True, generator=g).view(S, m)
    before = torch.binomial(torch.full((2, S, 1), float(n)), torch.full((2, S, 1), q_s), generator=g)
    after = torch.binomial(torch.full((2, S, m), float(n)), q_sa[actions].float().expand(2, S, m), generator=g)
    got = prover_table.theorem_terms(before, after, n, K)
    assert exact_var > 0.01 and exact_align > 0.01                      # not a degenerate state
    assert abs(got["distinguishability"] - exact_var) < 4 * got["distinguishability_se"]
    assert abs(got["alignment"] - exact_align) < 4 * got["alignment_se"]
    # the naive variance of one noisy estimate is inflated by the Monte Carlo noise; the two halves remove it
    one = pav.bok_unbiased(after[0], n, K) - pav.bok_unbiased(before[0], n, K)
    naive = float(((one - one.mean(1, keepdim=True)) ** 2).sum(1).mean() / (m - 1))
    assert naive > exact_var + 10 * got["distinguishability_se"]
