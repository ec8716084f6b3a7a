"""search.py: beam search against brute force on a toy tree, finished beams and ties, token counts against hand counts
with a deterministic Llama, the scoring rules, Wilson intervals, the compute-efficiency rule, and the script end to end."""

import json
import os
import subprocess
import sys

import pytest
import torch

import data
import pav
import search
from conftest import ROOT, bigram_llama, one_line_failure, tiny_llama

# --------------------------------------------------------------------------------------------------------------
# The beam-search core on a toy tree: steps are single tokens 0..C-1, scores exact


def tree(C, D, seed, stop_prob=0.0):
    """A C-ary tree of depth D with a random value on every leaf; a node ends early (is a leaf) with stop_prob.
    Returns done(prefix) and the exact optimistic value of a prefix: the best leaf value below it."""
    g = torch.Generator().manual_seed(seed)
    leaf_value, ends_early = {}, {}

    def done(y):
        y = tuple(y)
        if len(y) >= D:
            return True
        if y not in ends_early:
            ends_early[y] = len(y) > 0 and float(torch.rand(1, generator=g)) < stop_prob
        return ends_early[y]

    def leaves(y):
        if done(y):
            return [tuple(y)]
        return [l for a in range(C) for l in leaves(list(y) + [a])]

    for l in leaves([]):
        leaf_value[l] = float(torch.rand(1, generator=g))
    value = lambda y: max(leaf_value[l] for l in leaves(y))
    return done, value, leaf_value


def enumerate_steps(C, calls=None, done=None):
    """A 'sampler' that returns the C distinct next steps of each prefix, and checks it never extends a finished one."""
    def sample_steps(rows, expand):
        assert expand == C
        if calls is not None:
            calls.append([list(y) for _, y in rows])
        if done is not None:
            assert not any(done(y) for _, y in rows), "a finished response was extended"
        return [[[a] for a in range(C)] for _ in rows]
    return sample_steps


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("width", [1, 2, 3, 5, 8])
def test_beam_search_with_exact_optimistic_scores_returns_the_brute_force_top_b(seed, width):
    """When a prefix's score is the best leaf value below it, beam search of width B keeps the ancestors of the B best
    leaves at every depth, so its final pool is exactly the brute-force top B leaves, and the answer is the best one.
    Leaves at several depths (responses that finish early) are included: a finished leaf must survive later depths."""
    C, D = 3, 4
    done, value, leaf_value = tree(C, D, seed, stop_prob=0.3)
    score = lambda rows: (torch.tensor([value(y) for _, y in rows]), torch.tensor([value(y) for _, y in rows]))
    pool, answers, tokens, steps = search.beam_search(1, enumerate_steps(C, done=done), score,
                                                      lambda i, y: done(y), width, C, max_depth=D, merge=True)
    brute = sorted(leaf_value, key=leaf_value.get, reverse=True)[:width]
    assert [tuple(b.response) for b in pool[0]] == brute
    assert all(b.done for b in pool[0])
    assert tuple(answers[0].response) == brute[0]


def test_finished_beams_are_never_extended_nor_dropped_for_worse_unfinished_ones():
    """Depth 1: the finished step 0 scores 0.5, the unfinished steps 1 and 2 score 0.4 and 0.3. Every later candidate
    scores below 0.5, so the finished response stays at the top of a width-2 pool to the end and is never extended."""
    C = 3
    done = lambda y: y == [0] or len(y) == 3
    score_of = lambda y: 0.5 if y == [0] else 0.45 - 0.05 * len(y) - 0.01 * y[-1]
    calls = []
    score = lambda rows: (torch.tensor([score_of(y) for _, y in rows]), torch.tensor([1.0 - len(y) for _, y in rows]))
    pool, answers, tokens, steps = search.beam_search(1, enumerate_steps(C, calls, done), score,
                                                      lambda i, y: done(y), 2, C, max_depth=5, merge=True)
    assert pool[0][0].response == [0] and pool[0][0].done
    assert calls == [[[], []], [[1]], [[1, 0]]]      # depth 1: two copies of the problem; then only the open beam
    assert pool[0][1].response == [1, 0, 0] and pool[0][1].done
    # the answer is the finished response with the highest Q_hat^pi (the q given above prefers shorter ones)
    assert answers[0].response == [0]
    assert tokens == [2 * C + C + C] and steps == [2 * C + C + C]


def test_the_answer_is_the_finished_beam_with_the_highest_q_not_the_top_search_score():
    """Depth 1 (the last): [0] is finished with the top search score but Q_hat 0.2; [1] is finished with Q_hat 0.7;
    [2] has the highest Q_hat, 0.95, but is unfinished. The answer is [1]: by search score it would be [0], and
    ignoring whether a beam finished, [2]."""
    s_of, q_of = {0: 0.9, 1: 0.5, 2: 0.6}, {0: 0.2, 1: 0.7, 2: 0.95}
    score = lambda rows: (torch.tensor([s_of[y[-1]] for _, y in rows]), torch.tensor([q_of[y[-1]] for _, y in rows]))
    pool, answers, _, _ = search.beam_search(1, enumerate_steps(3), score, lambda i, y: y[-1] in (0, 1), 3, 3,
                                             max_depth=1, merge=True)
    assert [(b.response, b.done) for b in pool[0]] == [([0], True), ([2], False), ([1], True)]   # by search score
    assert answers[0].response == [1]


def test_ties_keep_a_finished_response_over_an_unfinished_one_then_the_earlier_candidate():
    C = 3
    done = lambda y: y in ([1],) or len(y) == 2
    # depth 1: all three steps score 0.5; only [1] is finished. Width 1 keeps [1] (finished wins the tie).
    score = lambda rows: (torch.full((len(rows),), 0.5), torch.zeros(len(rows)))
    pool, answers, _, _ = search.beam_search(1, enumerate_steps(C, done=done), score, lambda i, y: done(y), 1, C, 4,
                                             merge=True)
    assert [b.response for b in pool[0]] == [[1]]
    # width 2 at a tie between unfinished ones: [1] first, then the earliest unfinished candidate [0]
    pool, _, _, _ = search.beam_search(1, enumerate_steps(C, done=done), score, lambda i, y: done(y), 2, C, 1,
                                       merge=True)
    assert [b.response for b in pool[0]] == [[1], [0]]


def test_identical_candidates_are_merged_but_their_tokens_count():
    """A sampler that returns the same step C times: one candidate per problem, C times its tokens in the cost."""
    def same(rows, expand):
        return [[[7, 8]] * expand for _ in rows]
    score = lambda rows: (torch.zeros(len(rows)), torch.zeros(len(rows)))
    pool, _, tokens, steps = search.beam_search(2, same, score, lambda i, y: len(y) >= 4, 4, 3, 10, merge=True)
    assert [[b.response for b in p] for p in pool] == [[[7, 8, 7, 8]]] * 2
    # depth 1: 4 copies x 3 steps x 2 tokens; depth 2: the one distinct prefix x 3 x 2
    assert tokens == [4 * 3 * 2 + 3 * 2] * 2 and steps == [4 * 3 + 3] * 2


def test_without_merging_identical_candidates_are_beams_of_their_own():
    """The same sampler without merging: the 12 identical candidates of depth 1 fill all 4 beams, and each of the 4
    samples its own 3 next steps at depth 2."""
    def same(rows, expand):
        return [[[7, 8]] * expand for _ in rows]
    score = lambda rows: (torch.zeros(len(rows)), torch.zeros(len(rows)))
    pool, _, tokens, steps = search.beam_search(2, same, score, lambda i, y: len(y) >= 4, 4, 3, 10, merge=False)
    assert [[b.response for b in p] for p in pool] == [[[7, 8, 7, 8]] * 4] * 2
    assert tokens == [4 * 3 * 2 + 4 * 3 * 2] * 2 and steps == [4 * 3 + 4 * 3] * 2


# --------------------------------------------------------------------------------------------------------------
# The real step sampler and best-of-N with a deterministic Llama: token and step counts by hand

# arith ids: digits 0-9, "+" 10, "-" 11, "=" 12, ":" 13, "Q" 14, "A" 15, "\n" 16, EOS 17, BOS 18, PAD 19.
NL, ONE, PLUS, TWO = 16, 1, 10, 2


@pytest.fixture(scope="module")
def loop_policy():
    """After "\\n" comes "1", then "+", "2", "\\n", and round again: every step is "1+2\\n" (4 tokens), forever."""
    return bigram_llama(20, {NL: ONE, ONE: PLUS, PLUS: TWO, TWO: NL})


def test_token_and_step_counts_equal_a_hand_count(loop_policy):
    """arith with one operation: responses stop at 10 tokens, "1+2\\n1+2\\n1+" = steps of 4, 4 and 2 tokens."""
    task = data.Arith("arith", n_ops=1, p_err=0.0, hard_facts=False)
    assert task.max_new_tokens == 10
    tok, table = task.tokenizer, data.step_end_table(task.tokenizer, "\n")
    cfg = search.SearchConfig(task="arith", batch_rows=64)
    problems = task.problems(3, __import__("random").Random(0), split="test")
    responses, correct, tokens, steps = search.sample_best_of_n(loop_policy, task, tok, problems, 4, cfg, table)
    assert all(tok.decode(y) == "1+2\n1+2\n1+" for y in responses)
    assert tokens.tolist() == [[10.0] * 4] * 3 and steps.tolist() == [[3.0] * 4] * 3
    assert correct.sum() == 0
    # best-of-N at N = 3 costs 3 x 10 tokens and 3 x 3 steps per problem
    assert tokens[:, :3].sum(1).tolist() == [30.0] * 3 and steps[:, :3].sum(1).tolist() == [9.0] * 3

    # beam search, B = 2, C = 3: depth 1 samples 2 x 3 steps "1+2\n" (4 tokens); the six are one candidate; depth 2:
    # 1 x 3 x 4 tokens; depth 3: 1 x 3 x 2 tokens ("1+", the length limit). 24 + 12 + 6 = 42 tokens, 6 + 3 + 3 steps.
    sampler = search.step_sampler(loop_policy, task, tok, problems, cfg, table, None)
    score = lambda rows: (torch.zeros(len(rows)), torch.zeros(len(rows)))
    pool, answers, tokens, steps = search.beam_search(len(problems), sampler, score,
                                                      lambda i, y: data.is_complete(y, task, tok), 2, 3, 10,
                                                      merge=True)
    assert tokens == [42] * 3 and steps == [12] * 3
    assert all(tok.decode(a.response) == "1+2\n1+2\n1+" and a.done for a in answers)


def test_step_sampler_returns_one_step_per_sample_and_repeats_with_a_seed(arith):
    """With a random tiny Llama: each sampled step ends at its first step-end token (or EOS, or the length limit), all
    rows of all problems come back in order, and the same seed gives the same steps."""
    model = tiny_llama(20, seed=3)
    tok, table = arith.tokenizer, data.step_end_table(arith.tokenizer, "\n")
    cfg = search.SearchConfig(task="arith", batch_rows=8)          # chunks of 8 // 3 = 2 prefixes per call
    problems = arith.problems(2, __import__("random").Random(1), split="test")
    rows = [(0, []), (1, tok.encode("1+2=3\n")), (0, tok.encode("5-"))]
    runs = []
    for state in range(2):
        torch.manual_seed(state)                                   # the global state does not matter: the stream does
        sampler = search.step_sampler(model, arith, tok, problems, cfg, table, pav.generator("search", 4))
        runs.append(sampler(rows, 3))
    assert runs[0] == runs[1]
    assert [len(k) for k in runs[0]] == [3, 3, 3]
    for (i, y), kids in zip(rows, runs[0]):
        for a in kids:
            ends = [t for t, x in enumerate(a) if table[x]]
            assert ends in ([len(a) - 1], []) and (ends or len(y) + len(a) == arith.max_new_tokens)


# --------------------------------------------------------------------------------------------------------------
# Scoring rules, best-of-N, intervals, compute efficiency


class FixedPAV:
    """pav.PAV's interface with fixed Q^pi values by prefix length: q_pi of a response's prefixes [0.2, 0.6, 0.5]."""
    k = 4

    def score(self, prompts, responses):
        q = torch.tensor([[0.2, 0.6, 0.5][:len(y) + 1] + [0.0] * (2 - len(y)) for y in responses])   # (R, 3)
        m = torch.tensor([[True] * (len(y) + 1) + [False] * (2 - len(y)) for y in responses])
        q_mu = pav.bok_closed(q, self.k) * m
        return q, q_mu, pav.advantages(q_mu) * m[:, 1:], m, m[:, 1:]


def test_scores_are_q_alone_or_the_effective_reward_of_the_newest_step():
    rows = [(0, [5]), (0, [5, 6])]                                     # one step ("5"), two steps ("5", "6")
    q_alone, q = search.pav_scorer(FixedPAV(), [[18]], alpha=0.0)(rows)
    assert q_alone.tolist() == pytest.approx([0.6, 0.5]) and q.tolist() == pytest.approx([0.6, 0.5])
    eff, q = search.pav_scorer(FixedPAV(), [[18]], alpha=2.0)(rows)
    bo4 = lambda v: 1 - (1 - v) ** 4
    assert eff.tolist() == pytest.approx([0.6 + 2.0 * (bo4(0.6) - bo4(0.2)), 0.5 + 2.0 * (bo4(0.5) - bo4(0.6))])
    assert q.tolist() == pytest.approx([0.6, 0.5])


def test_best_of_n_ranks_by_the_value_after_each_responses_last_step(monkeypatch):
    """final_values reads each response's value after its last step (1, 2 and 3 steps here), not the bare problem's
    (index 0), which every sample of a problem shares: ranked by that, best-of-N would always pick the first sample."""
    q = torch.tensor([[0.9, 0.2, 0.0, 0.0], [0.9, 0.3, 0.8, 0.0], [0.9, 0.6, 0.5, 0.4]])   # (R, H+1), one problem
    m = torch.tensor([[True, True, False, False], [True, True, True, False], [True] * 4])
    monkeypatch.setattr(pav, "predict_q", lambda *args: (q, m))
    values = search.final_values(None, None, [[18]] * 3, [[1], [1, 2], [1, 2, 3]], None, 256)
    assert values.tolist() == pytest.approx([0.2, 0.8, 0.4])
    assert search.best_of_n(values.view(1, 3), torch.tensor([[0.0, 1.0, 0.0]]), 3).tolist() == [1.0]   # the second


def test_best_of_n_takes_the_top_score_among_the_first_n_and_pass_at_n_any():
    scores = torch.tensor([[0.1, 0.9, 0.9, 0.3], [0.5, 0.2, 0.8, 0.1]])
    correct = torch.tensor([[1., 0., 1., 1.], [0., 1., 0., 1.]])
    assert search.best_of_n(scores, correct, 1).tolist() == [1., 0.]
    assert search.best_of_n(scores, correct, 3).tolist() == [0., 0.]     # a tie: the first of 0.9, 0.9
    assert search.pass_at_n(correct, 1).tolist() == [1., 0.] and search.pass_at_n(correct, 2).tolist() == [1., 1.]


def test_wilson_interval_matches_the_formula_and_stays_in_0_1():
    low, high = search.wilson(40, 100)
    assert (low, high) == pytest.approx((0.3094, 0.4980), abs=1e-4)   # textbook value for 40 / 100
    for k, n in [(0, 10), (10, 10), (128, 128), (0, 128), (7, 9)]:   # the interval always holds k / n (for the plot)
        low, high = search.wilson(k, n)
        assert 0.0 <= low <= k / n <= high <= 1.0
    assert search.wilson(0, 10)[0] == 0.0 and search.wilson(128, 128)[1] == 1.0


def test_compute_efficiency_interpolates_in_log_tokens():
    rows = [{"method": "orm_best_of_n", "n": n, "tokens": t, "accuracy": a}
            for n, t, a in [(2, 100, 0.3), (4, 200, 0.4), (8, 400, 0.4)]]
    rows += [{"method": "pav_beam", "n": n, "tokens": t, "accuracy": a} for n, t, a in [(2, 50, 0.2), (4, 200, 0.6)]]
    eff = search.compute_efficiency(rows)
    # ORM's best 0.4 first at 200 tokens; PAV reaches 0.4 halfway from 0.2 to 0.6, i.e. at sqrt(50 * 200) = 100
    assert eff["tokens_orm"] == 200 and eff["tokens_pav_beam"] == pytest.approx(100.0)
    assert eff["ratio"] == pytest.approx(2.0)
    assert eff["lower_bound"] is False
    rows[-1]["accuracy"] = 0.35
    assert search.compute_efficiency(rows)["ratio"] is None


def test_compute_efficiency_is_a_lower_bound_when_the_smallest_beam_already_reaches_the_target():
    """The budget grid's largest possible value, 200 / 150, is all the grid can say: marked as a bound."""
    rows = [{"method": "orm_best_of_n", "n": n, "tokens": t, "accuracy": a} for n, t, a in [(2, 100, 0.2), (4, 200, 0.3)]]
    rows += [{"method": "pav_beam", "n": 2, "tokens": 150, "accuracy": 0.5}]
    eff = search.compute_efficiency(rows)
    assert eff["ratio"] == pytest.approx(200 / 150) and eff["lower_bound"] is True


def test_accuracy_at_matched_tokens_by_hand():
    curve = [(100, 0.2), (400, 0.6), (800, 0.6)]
    assert search.accuracy_at(curve, 200) == pytest.approx(0.4)            # halfway in log tokens from 100 to 400
    assert search.accuracy_at(curve, 100) == pytest.approx(0.2) and search.accuracy_at(curve, 600) == 0.6
    assert search.accuracy_at(curve, 50) is None and search.accuracy_at(curve, 1600) is None


def test_ranking_disagreement_by_hand():
    """Problem 0: the search score keeps candidates {0, 1}, Q_hat^pi would keep {1, 2}: one of two differs. Problem 1:
    both keep the same two. 1 of 4 kept candidates in all."""
    record = [([0, 0, 1, 0, 0, 1], torch.tensor([0.9, 0.8, 0.3, 0.1, 0.2, 0.4]),
               torch.tensor([0.1, 0.9, 0.3, 0.8, 0.2, 0.4]))]
    assert search.ranking_disagreement(record, 2) == pytest.approx(0.25)
    record.append(([0], torch.tensor([0.5]), torch.tensor([0.5])))           # a second depth: one more kept, alike
    assert search.ranking_disagreement(record, 2) == pytest.approx(1 / 5)


# --------------------------------------------------------------------------------------------------------------
# The script as a user runs it

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(torch.get_num_threads())}
# pav.py's tiny planted budget (tests/test_cli.py) and a tiny search: 8 problems, N = 1, 2
TINY = ["--task", "planted", "--d-model", "32", "--n-layers", "1", "--n-mc", "8", "--n-problems", "16",
        "--verifier-steps", "5", "--ns", "1,2", "--search-problems", "8"]


def run_script(args, cwd):
    return subprocess.run([sys.executable, os.path.join(ROOT, "search.py"), *args], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_search_script_end_to_end(tmp_path):
    out = tmp_path / "out"
    r = run_script(TINY + ["--out", str(out), "--provers", "1,4", "--alphas", "0,1"], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((out / "search.json").read_text())
    methods = {"orm_best_of_n", "pav_as_orm", "pass_at_n", "q_beam", "pav_beam", "pav_beam_bo1", "pav_beam_bo4"}
    assert {x["method"] for x in report["rows"]} == methods
    for x in report["rows"]:
        assert {"method", "n", "tokens", "accuracy", "ci_low", "ci_high", "pool_pass"} <= set(x)
        assert 0 <= x["ci_low"] <= x["accuracy"] <= x["ci_high"] <= 1 and x["tokens"] > 0
        assert x["accuracy"] <= x["pool_pass"]                           # the answer is one of the final candidates
    by = {(x["method"], x["n"]): x for x in report["rows"]}
    # planted: one token per step, 10 tokens at most per response; the three best-of-N rows share their samples
    for n in (1, 2):
        costs = {(by[(m, n)]["tokens"], by[(m, n)]["steps"]) for m in ("orm_best_of_n", "pav_as_orm", "pass_at_n")}
        assert len(costs) == 1 and by[("orm_best_of_n", n)]["tokens"] == by[("orm_best_of_n", n)]["steps"] <= 10 * n
        assert by[("q_beam", n)]["tokens"] == by[("q_beam", n)]["steps"] <= 10 * 3 * n
    assert by[("pass_at_n", 2)]["accuracy"] >= by[("orm_best_of_n", 2)]["accuracy"]
    assert "compute_efficiency" in report and report["gap_at_max_n"] == pytest.approx(
        by[("pav_beam", 2)]["accuracy"] - by[("orm_best_of_n", 2)]["accuracy"])
    assert report["gap_to_q_beam_at_max_n"] == pytest.approx(by[("pav_beam", 2)]["accuracy"] - by[("q_beam", 2)]["accuracy"])
    assert report["alpha"] in (0.0, 1.0) and len(report["alpha_tuning"]) == 2
    assert (out / "search.png").stat().st_size > 0 and "score " in (out / "search_samples.txt").read_text()
    assert r.stdout.splitlines()[0].startswith("device cpu | dtype torch.float32 | task planted")


@pytest.mark.parametrize("args, message", [
    (["--ns", "0,2"], "--ns"),
    (["--ns", "2,x"], "--ns"),
    (["--ns", "-4"], "--ns"),
    (["--alpha", "-0.1"], "--alpha must be a non-negative finite number"),
    (["--alpha", "inf"], "--alpha must be a non-negative"),
    (["--alphas", "0,0.5,12"], "--alphas must be in [0, 10]"),
    (["--alphas", "0,x"], "--alphas must be a comma-separated list"),
    (["--expand", "0"], "--expand"),
    (["--provers", "0"], "--provers"),
    (["--search-problems", "0"], "--search-problems"),
])
def test_bad_input_fails_fast_with_one_line(tmp_path, args, message, capsys):
    """In-process (a subprocess per case would spend seconds importing torch); the next test runs one as a user."""
    argv = ["--task", "planted", "--out", str(tmp_path / "out"), *args]
    assert message in one_line_failure(search.main, argv, capsys, out=tmp_path / "out")


@pytest.mark.slow
def test_bad_input_from_the_command_line(tmp_path):
    r = run_script(["--task", "planted", "--out", str(tmp_path / "out"), "--ns", "4,0"], tmp_path)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip() == "error: --ns entries must be positive, got '4,0'"
    assert not (tmp_path / "out").exists()


def test_effective_reward_ranks_the_children_of_one_beam_as_q_pi_does(monkeypatch):
    """ranking_disagreement's derivation: children of one parent share Q^mu(parent), and Q + alpha (1 - (1 - Q)^K)
    rises with Q, so the effective reward orders them as Q_hat^pi does; across parents it can differ. Parent A has
    Q^pi 0.5, parent B 0.1 (Q^mu 0.9375 and 0.3439); children: A -> 0.6, 0.4; B -> 0.3, 0.2. K = 4, alpha = 1:
    scores 0.6 + (0.9744 - 0.9375) = 0.6369, 0.4 + (0.8704 - 0.9375) = 0.3329, 0.3 + (0.7599 - 0.3439) = 0.7160,
    0.2 + (0.5904 - 0.3439) = 0.4465: B's first child outranks A's first, though its Q^pi is lower."""
    q = {(0,): 0.5, (1,): 0.1, (0, 5): 0.6, (0, 6): 0.4, (1, 5): 0.3, (1, 6): 0.2}

    def predict(verifier, tokenizer, prompts, responses, table, batch):   # Q^pi of the bare problem (0.5), then steps
        rows = [[0.5] + [q[tuple(y[:h + 1])] for h in range(len(y))] for y in responses]
        return torch.tensor(rows), torch.ones(len(rows), len(rows[0]), dtype=torch.bool)
    monkeypatch.setattr(pav, "predict_q", predict)
    record = []
    s, q_pi = search.pav_scorer(pav.PAV(None, None, None, 4), [[9]] * 2, 1.0, record)(
        [(0, [0, 5]), (0, [0, 6]), (0, [1, 5]), (0, [1, 6])])
    assert s.tolist() == pytest.approx([0.6369, 0.3329, 0.7160, 0.4465], abs=1e-4)
    assert q_pi.tolist() == pytest.approx([0.6, 0.4, 0.3, 0.2])
    assert s[0] > s[1] and s[2] > s[3]                                        # siblings: the order of Q^pi
    assert search.ranking_disagreement(record, 2) == pytest.approx(0.5)      # keeps {A5, B5}, Q^pi keeps {A5, A6}
