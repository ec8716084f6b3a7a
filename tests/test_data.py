"""data.py: the planted task's exact Q against brute force and Monte Carlo, the arith task, the tokenizer, the step rule."""

import itertools
import math
import random

import pytest
import torch

import data

EOS = 14


# --------------------------------------------------------------------------------------------------------------
# Brute-force oracles for the planted task, written without the KMP automaton or the DP

def brute_state(seq, target):
    """Longest suffix of seq that is a prefix of target; len(target) once target occurred anywhere in seq."""
    L = len(target)
    if any(list(seq[i:i + L]) == list(target) for i in range(len(seq) - L + 1)):
        return L
    return max(j for j in range(min(L, len(seq)) + 1) if list(seq[len(seq) - j:]) == list(target[:j]))


def brute_outcome(seq, target):
    """Rex: target occurs contiguously before the first EOS."""
    seq = list(seq)
    seq = seq[:seq.index(EOS)] if EOS in seq else seq
    return float(brute_state(seq, target) == len(target))


def prover_p(a, k, target, gamma):
    """gamma on target[k], 1 on each of the 14 other tokens; uniform after a full match."""
    if k == len(target):
        return 1 / 15
    return (gamma if a == target[k] else 1.0) / (gamma + 14)


def brute_q(prefix, target, gamma, horizon):
    """Exact Q by enumerating every continuation of the prefix up to the horizon (15^(horizon - len) of them)."""
    total = 0.0
    for cont in itertools.product(range(15), repeat=horizon - len(prefix)):
        prob, seq = 1.0, list(prefix)
        for a in cont:
            prob *= prover_p(a, brute_state(seq, target), target, gamma)
            seq.append(a)
        total += prob * brute_outcome(seq, target)
    return total


# --------------------------------------------------------------------------------------------------------------
# planted: automaton, prover, exact values

def test_prover_probs_match_the_paper(planted):
    for gamma in (2.0, 10.0):
        P = planted.prover_probs(gamma)
        assert P.shape == (6, 15)
        for k in range(6):
            for a in range(15):
                assert P[k, a].item() == pytest.approx(prover_p(a, k, planted.target, gamma), abs=1e-12)


def test_delta_against_brute_force(planted):
    rng = random.Random(0)
    target = planted.target
    for trial in range(3000):
        n = rng.randrange(0, 16)
        # half the sequences drawn mostly from the target's tokens, so partial matches and fallbacks are common
        pool = [3, 6, 0, 5, 3, 6, rng.randrange(15)] if trial % 2 else list(range(15))
        seq = [rng.choice(pool) for _ in range(n)]
        k = 0
        for i, a in enumerate(seq):
            k = int(planted.delta[k, a])
            assert k == brute_state(seq[:i + 1], target), seq[:i + 1]
        assert planted.match_state(seq) == brute_state(seq, target)
    # the KMP fallback cases, by hand: 3 6 0 3 | 6 -> "3 6" matched; 3 6 0 3 | 3 -> "3"; 3 6 0 | 3 6 0 3 5 found
    assert planted.match_state([3, 6, 0, 3, 6]) == 2
    assert planted.match_state([3, 6, 0, 3, 3]) == 1
    assert planted.match_state([3, 6, 0, 3, 6, 0, 3, 5]) == 5
    assert planted.match_state([3, 6, 0, 3, 5, 1, 1]) == 5   # absorbing


def test_exact_values_small_instance_against_enumeration():
    """A self-overlapping target (3 6 3) and horizon 4: every prefix's Q against all 15^4 completions."""
    task = data.Planted(target=(3, 6, 3))
    task.max_new_tokens = 4
    gamma = 7.0
    V = task.exact_values(gamma)
    assert V.shape == (5, 4)
    prefixes = [[]] + [[a] for a in range(15)] + [[3, 6], [3, 6, 6], [3, 6, 3], [6, 3, 6], [3, 3, 6], [3, 14],
                                                  [3, 6, 14], [1, 2, 3, 6], [3, 6, 3, 0], [3, 6, 0, 3]]
    for p in prefixes:
        assert task.exact_q(p, gamma, V) == pytest.approx(brute_q(p, task.target, gamma, 4), abs=1e-12), p
    # by hand: from the empty prefix, success needs 3 6 3 in the first three or the last three tokens
    g = gamma / (gamma + 14)
    o = 1 / (gamma + 14)
    # 3 6 3 then anything | a first token neither 3 nor EOS, then 3 6 3 | 3 3 6 3 (the second 3 keeps state 1)
    by_hand = g ** 3 + (1 - g - o) * g ** 3 + g * o * g * g
    assert task.exact_q([], gamma, V) == pytest.approx(by_hand, abs=1e-12)


def test_exact_q_full_task_last_two_tokens_against_enumeration(planted):
    """The real task (H = 10, target 3 6 0 3 5): prefixes with two or three tokens left, all continuations."""
    rng = random.Random(1)
    prefixes = [[0, 0, 0, 0, 0, 3, 6, 0], [1, 1, 1, 1, 1, 1, 3, 6], [1, 1, 1, 3, 6, 0, 3, 6],
                [2, 2, 2, 2, 2, 2, 2, 3], [2, 2, 2, 2, 2, 2, 3, 6, 0], [4, 4, 4, 4, 4, 3, 6, 0, 3],
                [3, 6, 0, 3, 5, 1, 1, 1], [1, 1, 1, 1, 1, 1, 1, 14], [9, 9, 9, 9, 9, 9, 9, 9]]
    prefixes += [[rng.choice([3, 6, 0, 5, 1]) for _ in range(8)] for _ in range(6)]
    for gamma in (5.0, 30.0):
        V = planted.exact_values(gamma)
        for p in prefixes:
            want = brute_q(p, planted.target, gamma, 10) if EOS not in p else 0.0
            assert planted.exact_q(p, gamma, V) == pytest.approx(want, abs=1e-12), (p, gamma)
    # by hand: state 4 with one token left succeeds iff the next token is 5
    assert planted.exact_q([0, 0, 0, 0, 0, 3, 6, 0, 3], 10.0) == pytest.approx(10 / 24, abs=1e-12)
    assert planted.exact_q([0, 0, 0, 0, 0, 0, 3, 6, 0, 3], 10.0) == 0.0       # no tokens left
    assert planted.exact_q([3, 6, 0, 3, 5], 10.0) == 1.0
    assert planted.exact_q([3, 6, 14], 10.0) == 0.0
    assert planted.exact_q([3, 6, 0, 3, 5, 14], 10.0) == 1.0                   # found before EOS


def mc_prefixes(planted):
    """48 prefixes: every match state, lengths 0..10, some containing the target, some ending in EOS."""
    fixed = [[], [3], [3, 6], [3, 6, 0], [3, 6, 0, 3], [3, 6, 0, 3, 6], [3, 6, 0, 3, 3], [1, 3, 6, 0, 3, 5],
             [3, 6, 0, 3, 5, 2, 2], [3, 6, 14], [14], [1, 2, 4, 14], [0, 0, 0, 0, 0, 3, 6, 0, 3],
             [0, 0, 0, 0, 0, 0, 0, 0, 3], [1] * 10, [1, 1, 1, 1, 1, 3, 6, 0, 3, 5], [7, 7, 7, 7, 3, 6]]
    rng = random.Random(2)
    rand = []
    while len(rand) < 31:
        n = rng.randrange(0, 8)
        p = [rng.choice([3, 6, 0, 3, 6, 0, 5, rng.randrange(14)]) for _ in range(n)]
        if EOS not in p:
            rand.append(p)
    return fixed + rand


def test_prover_monte_carlo_matches_exact_q(planted):
    """Q_hat from n gamma-prover completions agrees with the DP within a few standard errors on 48 prefixes."""
    prefixes = mc_prefixes(planted)
    states = {planted.match_state(p) for p in prefixes}
    assert states == {0, 1, 2, 3, 4, 5}
    n, g = 3000, torch.Generator().manual_seed(0)
    z = []
    for gamma in (10.0, 30.0):
        V = planted.exact_values(gamma)
        wins = planted.prover_complete(prefixes, gamma, n, generator=g).view(len(prefixes), n)   # (P, n)
        q_hat = wins.double().mean(1)
        for p, qh in zip(prefixes, q_hat.tolist()):
            q = planted.exact_q(p, gamma, V)
            se = math.sqrt(q * (1 - q) / n)
            if se == 0:   # contains the target, ends in EOS, or no way left to finish: exactly 0 or 1
                assert qh == q, (p, gamma)
            else:
                z.append(abs(qh - q) / se)
    assert len(z) >= 60
    assert max(z) < 4, max(z)
    assert sum(v < 3 for v in z) >= 0.95 * len(z)


def test_prover_complete_is_seeded(planted):
    a = planted.prover_complete([[], [3, 6]], 10.0, 500, generator=torch.Generator().manual_seed(3))
    b = planted.prover_complete([[], [3, 6]], 10.0, 500, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert a.shape == (1000,)


def test_planted_check_and_demonstrations(planted):
    problem = planted.problems(1, random.Random(0))[0]
    assert problem.prompt == "" and problem.answer == "36035"
    assert planted.check(problem, "1236035") == 1.0
    assert planted.check(problem, "3603") == 0.0
    demos = planted.demonstrations(200, random.Random(0))
    assert len(demos) == 200
    assert all(p == "" and len(r) <= 10 for p, r in demos)
    assert {len(r) for _, r in demos} != {10}              # some stop at EOS
    # gamma = 5 demonstrations succeed at the DP's rate, V[10, 0] = 0.0054, far below 1
    rate = sum(planted.check(problem, r) for _, r in planted.demonstrations(4000, random.Random(1), gamma=5.0)) / 4000
    q = planted.exact_q([], 5.0)
    assert abs(rate - q) < 4 * math.sqrt(q * (1 - q) / 4000)
    # the default demonstrations are gamma = 3's: the target's first token 3 has weight 3 of 17 at the start (5 of 19
    # at gamma = 5); among responses that do not stop at once, 3 / 16
    assert planted.demo_gamma == 3.0
    first = [r[0] for _, r in planted.demonstrations(4000, random.Random(2)) if r]
    share = first.count("3") / len(first)
    assert abs(share - 3 / 17 / (1 - 1 / 17)) < 4 * math.sqrt(0.19 * 0.81 / len(first))


# --------------------------------------------------------------------------------------------------------------
# arith

def test_arith_problems_and_clean_solutions(arith):
    rng = random.Random(0)
    problems = arith.problems(300, rng)
    for p in problems:
        text = p.prompt[2:-1]
        assert p.prompt.startswith("Q:") and p.prompt.endswith("\n") and len(text) == 9
        acc = int(text[0])
        for op, d in zip(text[1::2], text[2::2]):
            acc = (acc + int(d)) % 10 if op == "+" else (acc - int(d)) % 10
        assert p.answer == str(acc)
        y = arith.solution(p.prompt[2:-1], 0.0, rng)
        assert arith.check(p, y) == 1.0
        lines = y.split("\n")
        assert len(lines) == 5 and lines[-1] == f"A:{acc}"
        # the longest response plus EOS is exactly the length limit
        assert len(arith.tokenizer.encode(y)) + 1 == arith.max_new_tokens == 28


def test_arith_hand_example(arith):
    p = data.Problem("Q:5+6-0+8+5\n", "4")
    assert arith.solution("5+6-0+8+5", 0.0, None) == "5+6=1\n1-0=1\n1+8=9\n9+5=4\nA:4"
    assert arith.check(p, "5+6=1\n1-0=1\n1+8=9\n9+5=4\nA:4") == 1.0
    assert arith.check(p, "5+6=1\n1-0=1\n1+8=9\n9+5=4\nA:5") == 0.0
    assert arith.check(p, "A:4\nA:3") == 0.0
    assert arith.check(p, "") == 0.0
    # right by luck: two wrong lines (5+6=6, then 6-0=1) whose errors cancel modulo 10
    lucky = "5+6=6\n6-0=1\n1+8=9\n9+5=4\nA:4"
    assert arith.check(p, lucky) == 1.0 and arith.sound(p, lucky) == 0.0
    assert arith.sound(p, "5+6=1\n1-0=1\n1+8=9\n9+5=4\nA:4") == 1.0
    assert arith.sound(p, "5+6=1\n1-0=1\n1+8=9\n9+5=4\nA:5") == 0.0            # right lines, wrong answer line
    assert arith.on_track(p, "") and arith.on_track(p, "5+6=1\n") and arith.on_track(p, "5+6=1\n1-0=1\n")
    assert not arith.on_track(p, "5+6=6\n") and not arith.on_track(p, "5+6=6\n6-0=1\n")   # lucky's prefixes


class OneError:
    """An rng stand-in for Arith.solution: the error fires at line `at` only."""

    def __init__(self, at):
        self.at, self.line, self.rng = at, 0, random.Random(at)

    def random(self):
        self.line += 1
        return 0.0 if self.line - 1 == self.at else 1.0

    def choice(self, seq):
        return self.rng.choice(seq)


def test_arith_one_error_carries_forward_and_changes_the_answer(arith):
    for p in arith.problems(100, random.Random(1)):
        clean = arith.solution(p.prompt[2:-1], 0.0, None).split("\n")
        for at in range(arith.n_ops):
            lines = arith.solution(p.prompt[2:-1], 0.5, OneError(at)).split("\n")
            assert lines[:at] == clean[:at]
            assert lines[at][:4] == clean[at][:4] and lines[at][4] != clean[at][4]   # same operands, wrong result
            for prev, line in zip(lines[:-2], lines[1:-1]):
                assert line[0] == prev[-1]                                          # the error is carried forward
            assert lines[-1] != clean[-1]                                           # + and - mod 10 are bijections
            assert arith.check(p, "\n".join(lines)) == 0.0


def test_arith_hard_facts_err_only_on_hard_facts_and_answer_every_result():
    task = data.Arith("facts", n_ops=4, p_err=0.9, hard_facts=True)
    facts = [(a, o, b) for a in range(10) for o in "+-" for b in range(10)]
    assert sum(task.is_hard(*f) for f in facts) == 100                   # a fixed half of the 200 facts
    p = data.Problem("Q:5+6-0+8+5\n", "1194")
    assert task.problems(1, random.Random(0))[0] == data.Problem("Q:6-6-0-4-8\n", "0068")   # 6-6=0, 0-0=0, 0-4=6, 6-8=8
    assert task.solution("5+6-0+8+5", 0.0, None) == "5+6=1\n1-0=1\n1+8=9\n9+5=4\nA:1194"
    assert task.check(p, "5+6=1\n1-0=1\n1+8=9\n9+5=4\nA:1194") == 1.0
    assert task.check(p, "5+6=1\n1-0=1\n1+8=9\n9+5=4\nA:4") == 0.0
    # a wrong line makes the answer wrong even when a later error lands back on the right running value
    assert task.check(p, "5+6=2\n2-0=2\n2+8=9\n9+5=4\nA:2294") == 0.0
    assert len(task.tokenizer.encode(task.solution("5+6-0+8+5", 0.0, None))) + 1 == task.max_new_tokens == 31
    rng, wrong, lines = random.Random(1), {True: 0, False: 0}, {True: 0, False: 0}
    for q in task.problems(500, random.Random(2)):
        for line in task.solution(q.prompt[2:-1], 0.9, rng).split("\n")[:-1]:
            a, o, b, res = int(line[0]), line[1], int(line[2]), int(line[4])
            hard = task.is_hard(a, o, b)
            lines[hard] += 1
            wrong[hard] += res != (a + b if o == "+" else a - b) % 10
    assert wrong[False] == 0 and abs(wrong[True] / lines[True] - 0.9) < 0.03
    assert task.settings() == {"n_ops": 4, "p_err": 0.9, "hard_facts": True}


def test_the_tasks_and_their_settings():
    facts, arith = data.get_task("facts"), data.get_task("arith")
    assert (facts.name, facts.hard_facts) == ("facts", True) and (arith.name, arith.hard_facts) == ("arith", False)
    assert arith.settings() == {"n_ops": 4, "p_err": 0.35, "hard_facts": False}
    assert data.get_task("planted").settings() == {"target": [3, 6, 0, 3, 5], "demo_gamma": 3.0}
    clean = facts.demonstrations(50, random.Random(0), clean=True)
    assert all(facts.sound(data.Problem(p, ""), s) for p, s in clean)     # clean demonstrations have every line right


def test_tokenizer_round_trip_and_errors(arith, tmp_path):
    tok = arith.tokenizer
    assert len(tok) == 20 and (tok.eos_token_id, tok.bos_token_id, tok.pad_token_id) == (17, 18, 19)
    text = "Q:5+6-0+8+5\n5+6=1\nA:4"
    ids = tok.encode(text)
    assert len(ids) == len(text) and tok.decode(ids) == text
    assert tok.encode(text, add_special_tokens=True) == [18] + ids
    assert tok.decode(ids + [17, 19]) == text
    assert tok.decode([18] + ids + [17], skip_special_tokens=False) == "<bos>" + text + "<eos>"
    with pytest.raises(ValueError, match="'x'"):
        tok.encode("1+x")
    with pytest.raises(ValueError):
        data.Planted().tokenizer.encode("e")
    tok.save_pretrained(str(tmp_path))
    again = data.CharTokenizer.from_pretrained(str(tmp_path))
    assert again.chars == tok.chars and again.encode(text) == ids
    with pytest.raises(ValueError, match="unknown task"):
        data.get_task("chess")


# --------------------------------------------------------------------------------------------------------------
# The step rule

def test_step_end_table(arith, planted):
    table = data.step_end_table(arith.tokenizer, "\n")
    assert table.dtype == torch.bool and table.shape == (20,)
    assert table.nonzero().squeeze(1).tolist() == [16, 17]                   # "\n" and EOS
    assert data.step_end_table(planted.tokenizer, None).all()
    assert data.step_end_table(arith.tokenizer, "=").nonzero().squeeze(1).tolist() == [12, 17]
    with pytest.raises(ValueError, match="delimiter"):
        data.step_end_table(arith.tokenizer, "#")


def test_step_ends_hand_written_arith(arith):
    tok = arith.tokenizer
    table = data.step_end_table(tok, "\n")
    eos, pad = tok.eos_token_id, tok.pad_token_id
    rows = [
        (tok.encode("1+2=3\n3+4=7\nA:7") + [eos], 16),     # complete: ends at both newlines and at EOS
        (tok.encode("1+2=3\n3+"), 8),                       # cut at the length limit mid-step: ends at "+" too
        (tok.encode("1+2=3\n"), 6),                         # stopped at a delimiter
        (tok.encode("1+2=3\n3+4=7\n"), 3),                  # the mask cuts it after "1+2": newlines beyond are masked
        ([], 0),                                            # empty row: no ends at all
    ]
    T = 18
    ids = torch.full((len(rows), T), pad)
    mask = torch.zeros(len(rows), T, dtype=torch.bool)
    for i, (r, n_valid) in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, :n_valid] = True
    ends = data.step_ends(ids, mask, table)
    got = [row.nonzero().squeeze(1).tolist() for row in ends]
    assert got == [[5, 11, 15], [5, 7], [5], [2], []]
    assert not (ends & ~mask).any()


def test_step_ends_planted_every_token(planted):
    table = data.step_end_table(planted.tokenizer, None)
    ids = torch.tensor([[3, 6, 0, 3, 5, 14, 0], [1, 2, 3, 0, 0, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0, 0]], dtype=torch.bool)
    assert torch.equal(data.step_ends(ids, mask, table), mask)
