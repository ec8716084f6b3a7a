"""rl.py: the leave-one-out baseline, step rewards on tokens, the policy-gradient loss against hand computation, the
alpha = 0 gradient against outcome-only REINFORCE, teacher-forced log-probs, exact resume, and the script end to end."""

import dataclasses
import json
import math
import os
import subprocess
import sys

import pytest
import torch

import data
import pav
import rl
from conftest import ROOT, bigram_llama, one_line_failure, tiny_llama

# arith ids: digits 0-9, "+" 10, "-" 11, "=" 12, ":" 13, "Q" 14, "A" 15, "\n" 16, EOS 17, BOS 18, PAD 19.
A_EOS, A_PAD = 17, 19
ONE, PLUS, TWO = 1, 10, 2


def test_leave_one_out_baseline_excludes_the_row_itself():
    outcomes = torch.tensor([1., 0., 0., 1., 1., 1., 1., 0.])
    # group 1: each row's baseline is the mean of the other three; group 2 likewise
    expected = torch.tensor([1 / 3, 2 / 3, 2 / 3, 1 / 3, 2 / 3, 2 / 3, 2 / 3, 1.])
    assert torch.allclose(rl.loo_baseline(outcomes, 4), expected)
    assert torch.allclose(rl.loo_baseline(outcomes, 2), torch.tensor([0., 1., 1., 0., 1., 1., 0., 1.]))


def test_step_rewards_land_on_the_tokens_of_their_step(arith):
    """Steps end at "\\n" and at EOS; the delimiter belongs to the step it ends (the classic off-by-one)."""
    tok = arith.tokenizer
    texts = ["1+2=3\n3+4=7\nA:7", "5-5=0\nA:0"]
    rows = [tok.encode(t) + [A_EOS] for t in texts]
    T = max(len(r) for r in rows)
    ids = torch.tensor([r + [A_PAD] * (T - len(r)) for r in rows])       # (2, T)
    mask = torch.tensor([[1] * len(r) + [0] * (T - len(r)) for r in rows]).bool()
    ends = data.step_ends(ids, mask, data.step_end_table(tok, "\n"))
    steps = [[0] * 6 + [1] * 6 + [2] * 4, [0] * 6 + [1] * 4]               # "1+2=3\n", "3+4=7\n", "A:7<eos>"
    outcomes = torch.tensor([1., 0.])
    term = torch.tensor([[0.1, -0.2, 0.3], [0.5, 0.7, 0.0]])               # (N, H) per-step A^mu
    got = rl.token_rewards(rl.step_rewards(outcomes, term, group=2, alpha=2.0), ends, mask)   # (N, T)
    # row 0: Rex 1, baseline 0 (the other row failed); row 1: Rex 0, baseline 1
    for i, sign in ((0, 1.0), (1, -1.0)):
        for t, h in enumerate(steps[i]):
            assert got[i, t].item() == pytest.approx(sign + 2.0 * term[i, h].item())
    assert got[0, 5].item() == pytest.approx(1.2) and got[0, 6].item() == pytest.approx(0.6)   # "\n" | "3"
    assert (got[1, len(steps[1]):] == 0).all()                              # padding


def test_pg_loss_equals_a_hand_computed_sum():
    logp = torch.tensor([[-0.5, -1.0, -2.0], [-0.1, -0.3, 0.0]])
    ref = torch.tensor([[-0.7, -1.0, -1.5], [-0.2, -0.3, 0.0]])
    rewards = torch.tensor([[1.0, 1.0, -0.5], [2.0, 0.25, 9.0]])
    mask = torch.tensor([[1., 1., 1.], [1., 1., 0.]])
    kl = 0.1
    total = 0.0
    for i in range(2):
        for t in range(3):
            if mask[i, t]:
                r = ref[i, t].item() - logp[i, t].item()
                total += -logp[i, t].item() * rewards[i, t].item() + kl * (math.exp(r) - r - 1)
    assert rl.pg_loss(logp, ref, rewards, mask, kl).item() == pytest.approx(total / 5, rel=1e-6)


def test_response_logprobs_match_a_separate_pass_per_row(arith):
    model = tiny_llama(20, seed=3)
    tok = arith.tokenizer
    prompts = [[18] + tok.encode("Q:1+2"), [18] + tok.encode("Q:3-4+5-6")]   # different lengths: left padding
    rows = [tok.encode("1+2=3\nA:3") + [A_EOS], tok.encode("3-4=9")]
    T = max(len(r) for r in rows)
    ids = torch.tensor([r + [A_PAD] * (T - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (T - len(r)) for r in rows]).bool()
    got = rl.response_logprobs(model, prompts, ids, mask, A_PAD)          # (2, T)
    for i, (p, r) in enumerate(zip(prompts, rows)):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([p + r])).logits[0]     # (P + T_i, V)
        want = torch.log_softmax(logits[len(p) - 1:-1], -1).gather(1, torch.tensor(r)[:, None]).squeeze(1)
        assert torch.allclose(got[i, :len(r)], want, atol=1e-5)
        assert (got[i, len(r):] == 0).all()


def test_alpha_zero_gives_the_outcome_only_reinforce_gradient(arith):
    """With alpha = 0 the per-token rewards are (Rex - b) on every token, whatever A^mu is, and the gradient is
    -sum_i (Rex_i - b_i) sum_t grad log pi(y_it) / n_tokens; with alpha > 0 it differs."""
    tok = arith.tokenizer
    prompts = [[18] + tok.encode("Q:1+2")] * 4
    rows = [tok.encode(t) + [A_EOS] for t in ("1+2=3\nA:3", "1+2=4\nA:4", "1+2=3\nA:3", "1+2=5\nA:5")]
    ids, mask = torch.tensor(rows), torch.ones(4, len(rows[0]), dtype=torch.bool)
    outcomes = torch.tensor([1., 0., 1., 0.])
    ends = data.step_ends(ids, mask, data.step_end_table(tok, "\n"))
    term = torch.randn(4, 2, generator=torch.Generator().manual_seed(0))

    def grads(loss_fn):
        model = tiny_llama(20, seed=5)
        loss_fn(model).backward()
        return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])

    def pg(alpha):
        return lambda m: rl.pg_loss(rl.response_logprobs(m, prompts, ids, mask, A_PAD), torch.zeros(ids.shape),
                                    rl.token_rewards(rl.step_rewards(outcomes, term, 4, alpha), ends, mask),
                                    mask.float(), 0.0)

    def reinforce(m):
        adv = outcomes - torch.tensor([(outcomes.sum() - o) / 3 for o in outcomes])
        return -(rl.response_logprobs(m, prompts, ids, mask, A_PAD).sum(1) * adv).sum() / mask.sum()

    assert torch.allclose(grads(pg(0.0)), grads(reinforce), atol=1e-6)
    assert not torch.allclose(grads(pg(1.0)), grads(reinforce), atol=1e-4)


def test_policy_step_logs_the_share_right_by_arithmetic_apart_from_luck(arith, monkeypatch):
    """On arith a step's stats carry `sound`, the share of responses whose every line is right; a chain whose wrong
    lines cancel is rewarded (outcome 1) but not sound. Four fixed responses, one problem: reward 3/4, sound 2/4."""
    tok = arith.tokenizer
    problem = data.Problem("Q:5+6-0+8+5\n", "4")
    texts = ["5+6=1\n1-0=1\n1+8=9\n9+5=4\nA:4",      # right
             "5+6=6\n6-0=1\n1+8=9\n9+5=4\nA:4",      # right by luck: 5+6=6 and 6-0=1 cancel
             "5+6=1\n1-0=1\n1+8=9\n9+5=4\nA:4",      # right
             "5+6=1\n1-0=1\n1+8=9\n9+5=5\nA:5"]      # wrong
    rows = [tok.encode(t) + [A_EOS] for t in texts]
    T = max(map(len, rows))
    ids = torch.tensor([r + [A_PAD] * (T - len(r)) for r in rows])
    mask = torch.tensor([[True] * len(r) + [False] * (T - len(r)) for r in rows])
    monkeypatch.setattr(pav, "sample", lambda *a, **k: pav.Rollout(ids, torch.zeros(ids.shape), mask, torch.zeros(4)))
    model = tiny_llama(20, seed=1)
    cfg = rl.RLConfig(batch_size=4)
    stats, _ = rl.policy_step(model, model, torch.optim.SGD(model.parameters(), lr=0.0), None, [problem], arith, tok,
                              cfg, alpha=0.0, seed=0, it=1)
    assert stats["reward"] == 0.75 and stats["sound"] == 0.5


# --------------------------------------------------------------------------------------------------------------
# What feeds policy_step: the KL's reference policy, the term each control rewards, mu = pi's rollouts

NL, A_A, A_COLON = 16, 15, 13                                             # "\n", "A", ":"


def fix_rollout(monkeypatch, tok, texts, once=False):
    """pav.sample returns these responses (EOS appended where a text ends in "$"), padded; with `once`, only at its
    first call (policy_step's), later calls sampling for real (a prover's rollouts)."""
    rows = [tok.encode(t.rstrip("$")) + [A_EOS] * t.endswith("$") for t in texts]
    T = max(map(len, rows))
    ids = torch.tensor([r + [A_PAD] * (T - len(r)) for r in rows])       # (N, T)
    mask = torch.tensor([[True] * len(r) + [False] * (T - len(r)) for r in rows])
    real, calls = pav.sample, []

    def sample(*args, **kwargs):
        calls.append(1)
        if once and len(calls) > 1:
            return real(*args, **kwargs)
        return pav.Rollout(ids, torch.zeros(ids.shape), mask, torch.zeros(len(rows)))
    monkeypatch.setattr(pav, "sample", sample)
    return rows


def test_kl_reference_is_the_frozen_start_policy(arith, monkeypatch):
    """The KL penalty compares the policy being trained with the start policy `base`, not with itself (then it is 0).
    pi: a bigram model with logit ln 4 on each token's successor (p = 4/23, the 19 others 1/23 each); base: uniform,
    1/20. A successor token has r = ln((1/20) / (4/23)) = ln(23/80), k3 = exp(r) - r - 1 = 0.534032; any other token
    r = ln(23/20), k3 = 0.010238. The rows below hold 13 successors and 7 others: kl = (13 * 0.534032 + 7 * 0.010238)
    / 20 = 0.350704; entropy (-mean log pi) = (13 * 1.749200 + 7 * 3.135494) / 20 = 2.234403."""
    tok = arith.tokenizer
    loop = {NL: ONE, ONE: PLUS, PLUS: TWO, TWO: NL}                       # "\n" -> "1" -> "+" -> "2" -> "\n"
    model = bigram_llama(20, {v: loop.get(v, A_EOS) for v in range(20)}, margin=math.log(4) / math.sqrt(32))
    base = bigram_llama(20, {})                                           # every logit 0
    # after the prompt's "\n": all 5 successors, twice; "3" "+" are not, "2" "\n" "1" are; none of "3333\n" is
    fix_rollout(monkeypatch, tok, ["1+2\n1", "1+2\n1", "3+2\n1", "3333\n"])
    stats, _ = rl.policy_step(model, base, torch.optim.SGD(model.parameters(), lr=0.0), None,
                              [data.Problem("Q:1+2\n", "3")], arith, tok, rl.RLConfig(batch_size=4), alpha=0.0, seed=0,
                              it=1)
    assert stats["kl"] == pytest.approx(0.350704, abs=2e-5)
    assert stats["entropy"] == pytest.approx(2.234403, abs=2e-5)


class StubScorer:
    """pav.PAV.score's interface with fixed values for the four responses of `wiring_rows`: q_mu (N, H+1), a_mu (N, H)
    (numbers that are not q_mu's differences, so that every mix-up shows), and what it was called with."""
    q_mu = torch.tensor([[0.2, 0.5, 0.9], [0.3, 0.6, 0.7], [0.1, 0.4, 0.0], [0.8, 0.3, 0.0]])
    a_mu = torch.tensor([[0.01, -0.02], [0.03, 0.04], [-0.05, 0.0], [0.07, 0.0]])
    valid = torch.tensor([[True, True], [True, True], [True, False], [True, False]])

    def score(self, prompts, responses, **kwargs):
        self.kwargs = kwargs
        m = torch.cat([torch.ones(4, 1, dtype=torch.bool), self.valid], 1)
        return self.q_mu.clone(), self.q_mu.clone(), self.a_mu.clone(), m, self.valid


@pytest.mark.parametrize("control, term", [
    ("", [[0.01, -0.02], [0.03, 0.04], [-0.05, 0.0], [0.07, 0.0]]),    # A^mu, as it is
    ("reward-q", [[0.5, 0.9], [0.6, 0.7], [0.4, 0.0], [0.3, 0.0]]),    # Q^mu(s_h, a_h) of each step h >= 1, masked
])
def test_each_control_rewards_its_term(arith, monkeypatch, control, term):
    """What step_rewards receives as the step term: A^mu by default, Q^mu after each step with --control reward-q
    (appendix G), from a scorer whose values are fixed; and the scorer is asked about the policy being trained."""
    tok = arith.tokenizer
    fix_rollout(monkeypatch, tok, ["1+2=3\nA:3$", "1+2=4\nA:4$", "A:3$", "A$"])   # 2, 2, 1 and 1 steps
    seen, real = [], rl.step_rewards
    monkeypatch.setattr(rl, "step_rewards", lambda o, t, *a: seen.append((t.clone(), a[-1])) or real(o, t, *a))
    model, scorer = tiny_llama(20, seed=1), StubScorer()
    problem = data.Problem("Q:1+2\n", "3")
    stats, batch = rl.policy_step(model, model, torch.optim.SGD(model.parameters(), lr=0.0), scorer, [problem], arith,
                                  tok, rl.RLConfig(batch_size=4, control=control), alpha=2.0, seed=0, it=1)
    [(rewarded, alpha)] = seen
    assert torch.allclose(rewarded, torch.tensor(term)) and torch.allclose(batch[3], torch.tensor(term)) and alpha == 2
    assert stats["adv_mean"] == pytest.approx({"": 0.08 / 6, "reward-q": 3.4 / 6}[control])   # over the 6 steps
    assert scorer.kwargs["policy"] is model and scorer.kwargs["problems"] == [problem] * 4


def test_mu_pi_control_rolls_out_the_policy_being_trained(arith, monkeypatch):
    """--control mu-pi: PolicyProver's Q^pi comes from rollouts of the policy being trained, which always writes "A:3"
    (a bigram model), and not of the start policy, which writes "A:4". Problem 1+2 (answer 3), two rollouts a prefix:
      "1+2=4\nA:4": Q = 1 (problem), 1 (after step 1), 0 (the response itself): A = 0, -1
      "1+2=3\nA:3": Q = 1, 1, 1: A = 0, 0;  "A:3": Q = 1, 1: A = 0;  "A:4": Q = 1, 0: A = -1.
    (From the start policy it would be 0, 0, 0; 0, 0, 1; 0, 1; 0, 0.)"""
    task = data.Arith("arith", n_ops=1, p_err=0.0, hard_facts=False)
    tok = task.tokenizer
    writes = lambda d: bigram_llama(20, {NL: A_A, A_A: A_COLON, A_COLON: d, d: A_EOS})   # "\n" -> "A:<d>" EOS
    model, base = writes(3), writes(4)
    fix_rollout(monkeypatch, tok, ["1+2=4\nA:4$", "1+2=3\nA:3$", "A:3$", "A:4$"], once=True)
    cfg = rl.RLConfig(batch_size=4, control="mu-pi")
    stats, batch = rl.policy_step(model, base, torch.optim.SGD(model.parameters(), lr=0.0),
                                  rl.PolicyProver(task, tok, cfg, n=2), [data.Problem("Q:1+2\n", "3")], task, tok, cfg,
                                  alpha=1.0, seed=0, it=1)
    assert batch[3].tolist() == [[0.0, -1.0], [0.0, 0.0], [0.0, 0.0], [-1.0, 0.0]]
    assert batch[2].tolist() == [0.0, 1.0, 1.0, 0.0] and stats["reward"] == 0.5


def test_write_samples_by_hand(arith, tmp_path):
    """Three of four responses to 1+2, outcomes 1, 0, 1, 0; step terms as below, alpha 2. Each step's reward is
    Rex - (mean Rex of the other three) + 2 * term: response 0: 1 - 1/3 + 2 * 0.25 = 1.167 and 1 - 1/3 + 2 * 0.5 =
    1.667; response 1: 0 - 2/3 - 1 = -1.667 and -0.667; response 2: 1 - 1/3 + 0.25 = 0.917."""
    tok = arith.tokenizer
    prompts = [data.prompt_ids(tok, data.Problem("Q:1+2\n", "3"))] * 4
    responses = [tok.encode(t) + [A_EOS] for t in ("1+2=3\nA:3", "1+2=4\nA:4", "A:3", "A:5")]
    term = torch.tensor([[0.25, 0.5], [-0.5, 0.0], [0.125, 0.0], [0.0, 0.0]])
    path = tmp_path / "samples.txt"
    rl.write_samples(path, 20, tok, data.step_end_table(tok, "\n"), prompts, responses, torch.tensor([1., 0., 1., 0.]),
                     term, 2.0)
    assert path.read_text() == (
        "--- iteration 20 | response 0 | Rex 1\n"
        "Q:1+2\n"
        "  step 1: '1+2=3\\n'      A +0.250  reward +1.167\n"
        "  step 2: 'A:3'          A +0.500  reward +1.667\n"
        "--- iteration 20 | response 1 | Rex 0\n"
        "Q:1+2\n"
        "  step 1: '1+2=4\\n'      A -0.500  reward -1.667\n"
        "  step 2: 'A:4'          A +0.000  reward -0.667\n"
        "--- iteration 20 | response 2 | Rex 1\n"
        "Q:1+2\n"
        "  step 1: 'A:3'          A +0.125  reward +0.917\n")


def test_two_gamma_sweep_by_hand(capsys):
    """summarize_sweep on two seeds and gammas 5 and 10, with the run names planned_runs gives: each run's accuracy
    averaged over its curve, then over seeds. gamma 5: (0.4 + 0.4) / 2 = 0.4; gamma 10: (0.3 + 0.4) / 2 = 0.35;
    ORM-RL: (0.2 + 0.1) / 2 = 0.15."""
    runs = rl.planned_runs(rl.RLConfig(alpha=1.0), [0, 1], [5.0, 10.0])
    assert [r[0] for r in runs] == ["orm_seed0", "orm_seed1", "pav_gamma5_seed0", "pav_gamma10_seed0",
                                    "pav_gamma5_seed1", "pav_gamma10_seed1"]
    assert [(r[2], r[3]) for r in runs] == [(None, 0.0)] * 2 + [(5.0, 1.0), (10.0, 1.0)] * 2
    curves = {0: {"orm": [0.1, 0.3], "pav_gamma5": [0.2, 0.6], "pav_gamma10": [0.1, 0.5]},
              1: {"orm": [0.0, 0.2], "pav_gamma5": [0.4, 0.4], "pav_gamma10": [0.2, 0.6]}}
    results = {"seeds": {s: {name: {"curve": [{"accuracy": a} for a in acc]} for name, acc in runs_.items()}
                         for s, runs_ in curves.items()}}
    rl.summarize_sweep(results, [5.0, 10.0])
    assert [s["gamma"] for s in results["sweep"]] == [5.0, 10.0]
    assert [s["mean_accuracy"] for s in results["sweep"]] == pytest.approx([0.4, 0.35])
    assert results["sweep_orm_mean_accuracy"] == pytest.approx(0.15)
    assert "gamma 5: 0.400, gamma 10: 0.350 | ORM-RL 0.150" in capsys.readouterr().out


def test_gamma_prover_q_converges_to_the_dynamic_program_and_advantages_are_its_differences(planted):
    responses = [[3, 6, 0, 3, 5, 1, 2], [1, 14], [3, 6, 1, 14], [2, 3, 6, 0]]
    q, _, a, m, m_adv = rl.GammaProver(planted, 10.0, n=20_000).score(None, responses, seed=0)
    V = planted.exact_values(10.0)
    exact = [[planted.exact_q(y[:h], 10.0, V) for h in range(len(y) + 1)] for y in responses]
    for i, y in enumerate(responses):
        assert m[i].sum() == len(y) + 1 and m_adv[i].sum() == len(y)
        # 20k rollouts: standard error <= 0.0036; 5 standard errors
        assert (q[i, :len(y) + 1] - torch.tensor(exact[i])).abs().max() < 0.018
        assert a[i, :len(y)].tolist() == pytest.approx((q[i, 1:len(y) + 1] - q[i, :len(y)]).tolist())   # Eq. 2
    assert q[0, 5] == 1.0 and a[0, 5:].abs().sum() == 0                  # matched: nothing more to gain
    assert q[1, 2] == 0.0 and a[1, 1].item() == pytest.approx(-q[1, 1].item())   # EOS before the match: Q drops to 0
    assert exact[3][4] >= (10 / 24) ** 2                                  # two tokens short of the target


@pytest.fixture
def tiny_rl(monkeypatch):
    """rl.py's schedule shrunk for a four-iteration run: evaluate, checkpoint and write samples every 2 iterations,
    Pass@N up to 4 on 8 problems, early Pass@N at iteration 2."""
    for name, value in [("EVAL_EVERY", {"planted": 2}), ("CKPT_EVERY", 2), ("SAMPLES_EVERY", 2), ("PASS_N", 4),
                        ("PASS_PROBLEMS", 8), ("EARLY_ITERATION", {"planted": 2})]:
        monkeypatch.setattr(rl, name, value)


TINY = ["--task", "planted", "--d-model", "32", "--n-layers", "1", "--iterations", "4", "--batch-size", "16",
        "--eval-problems", "16"]


def test_resume_reproduces_an_uninterrupted_run_exactly(tmp_path, planted, capsys, tiny_rl):
    """Two iterations, then --resume to four, against four straight: the same weights, curve and log."""
    cfg = pav.parse_config(rl.RLConfig, TINY + ["--out", str(tmp_path)])
    pav.check_config(cfg)
    base, tok = tiny_llama(len(planted.tokenizer), seed=1), planted.tokenizer
    scorer = rl.GammaProver(planted, 10.0, n=16)

    def run(out, iterations, resume):
        c = dataclasses.replace(cfg, iterations=iterations, resume=resume)
        os.makedirs(out, exist_ok=True)
        return rl.train("pav_seed0", base, scorer, planted, tok, c, seed=0, alpha=1.0, out=str(out))

    straight, h_straight = run(tmp_path / "a", 4, False)
    run(tmp_path / "b", 2, False)
    capsys.readouterr()
    resumed, h_resumed = run(tmp_path / "b", 4, True)
    assert "resuming at iteration 2" in capsys.readouterr().out   # it went on from the checkpoint, not from scratch
    for (k, v), (k2, v2) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        assert k == k2 and torch.equal(v, v2), k
    strip = lambda log: [{k: v for k, v in s.items() if k != "seconds"} for s in log]
    assert h_straight["curve"] == h_resumed["curve"] and strip(h_straight["log"]) == strip(h_resumed["log"])
    assert [c["iteration"] for c in h_straight["curve"]] == [0, 2, 4]
    assert "early_pass" in h_resumed
    # and the weights moved: the run trained
    assert any(not torch.equal(v, w) for v, w in zip(straight.state_dict().values(), base.state_dict().values()))


ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(torch.get_num_threads())}


def run_script(args, cwd):
    return subprocess.run([sys.executable, os.path.join(ROOT, "rl.py"), *args], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_rl_script_end_to_end_then_resume(tmp_path, tiny_rl, capsys):
    """The script in-process (its schedule shrunk by tiny_rl), then as a user runs it to resume."""
    out = tmp_path / "out"
    rl.main(TINY + ["--out", str(out)])
    stdout = capsys.readouterr().out
    report = json.loads((out / "rl.json").read_text())
    for key in ("sample_efficiency", "final_accuracy", "pass", "early_pass", "seeds"):
        assert key in report
    curve = report["seeds"]["0"]["pav"]["curve"]
    assert [c["responses"] for c in curve] == [0, 32, 64]
    assert all(0 <= c["accuracy"] <= 1 for c in curve)
    assert set(report["final_accuracy"]) == {"orm", "pav"}
    assert (out / "rl.png").stat().st_size > 0 and (out / "rl_early.png").stat().st_size > 0
    assert "step 1:" in (out / "seed0" / "rl" / "samples_pav_seed0.txt").read_text()
    lines = [l for l in stdout.splitlines() if l.startswith("pav_seed0 iter ")]
    assert len(lines) == 4 and "| reward " in lines[0] and "| kl " in lines[0] and "| eval acc " in lines[1]
    # a finished run resumed: nothing is trained again, the summary is the same
    rl.main(TINY + ["--out", str(out), "--resume"])
    assert "resuming at iteration 4" in capsys.readouterr().out
    assert json.loads((out / "rl.json").read_text())["seeds"] == report["seeds"]
    # resumed with other settings: refused in one line before any policy is loaded
    changed = run_script(TINY + ["--out", str(out), "--resume", "--lr", "0.5"], tmp_path)
    assert changed.returncode == 2 and "other settings" in changed.stderr and "rerun without --resume" in changed.stderr
    assert len(changed.stderr.strip().splitlines()) == 1 and "policy" not in changed.stdout
    # a corrupt checkpoint: one line that names it
    (out / "seed0" / "rl" / "pav_seed0.pt").write_bytes(b"not a checkpoint")
    corrupt = run_script(TINY + ["--out", str(out), "--resume"], tmp_path)
    assert corrupt.returncode == 2 and "pav_seed0.pt cannot be read" in corrupt.stderr
    assert len(corrupt.stderr.strip().splitlines()) == 1 and "policy" not in corrupt.stdout


def test_resume_with_nothing_to_resume_starts_over_and_says_so(tmp_path, tiny_rl, capsys):
    rl.main(TINY + ["--out", str(tmp_path / "out"), "--resume", "--iterations", "1"])
    out = capsys.readouterr().out
    assert "orm_seed0: no checkpoint" in out and "starting it over" in out
    assert (tmp_path / "out" / "rl.json").exists()


@pytest.mark.parametrize("args, message", [
    (["--alpha", "-0.5"], "--alpha"),
    (["--batch-size", "0"], "--batch-size"),
    (["--task", "nonsense"], "unknown task"),
    (["--batch-size", "10"], "multiple of 4"),
    (["--seeds", "0,x"], "--seeds"),
    (["--control", "mu"], "--control must be mu-pi or reward-q"),
    (["--gammas", "0"], "--gammas entries must be positive"),
    (["--lr", "nan"], "--lr must be a positive finite number, got nan"),
    (["--lr", "inf"], "--lr must be a positive"),
    (["--iterations", "0"], "--iterations must be a positive"),
    (["--seed", "1"], "unrecognized arguments: --seed"),
    (["--prover", "bo0"], "--prover 'bo0' must be boK"),
])
def test_bad_input_fails_fast_with_one_line(tmp_path, args, message, capsys):
    """In-process (a subprocess per case spends seconds importing torch; tests/test_cli.py runs some as a user)."""
    argv = ["--task", "planted", "--out", str(tmp_path / "out"), *args]
    assert message in one_line_failure(rl.main, argv, capsys, out=tmp_path / "out")


def test_sample_efficiency_by_hand():
    def curve(accs):
        return [{"responses": 64 * i, "accuracy": a} for i, a in enumerate(accs)]
    # smoothed (median of each and up to two before it): ORM [.1 .15 .2 .4 .5], PAV [.1 .3 .5 .6 .7]
    e = rl.sample_efficiency(curve([0.1, 0.2, 0.4, 0.5, 0.5]), curve([0.1, 0.5, 0.6, 0.7, 0.7]), n_eval=512)
    assert (e["target"], e["responses_orm"], e["responses_pav"], e["ratio"], e["lower_bound"]) == (0.5, 256, 128, 2.0, False)
    # ORM-RL stalled at 0: the target is the smallest measurable progress, 2 / 4096, its count its whole run
    e = rl.sample_efficiency(curve([0, 0, 0, 0, 0]), curve([0, 0, 0.001, 0.002, 0.01]), n_eval=4096)
    assert e["target"] == pytest.approx(2 / 4096) and rl.accuracy_text(e["target"]) == "0.0005"
    assert (e["responses_orm"], e["responses_pav"], e["lower_bound"]) == (256, 192, True) and e["ratio"] == 256 / 192
    # ORM-RL touched that target on the way and ended below it (smoothed [0 .001 .002 .002 0]), as evaluation noise at
    # one success in 4,096 samples does: still no measurable progress, its whole run the count, a lower bound
    e = rl.sample_efficiency(curve([0, 0.002, 0.002, 0, 0]), curve([0, 0, 0.001, 0.002, 0.01]), n_eval=4096)
    assert (e["responses_orm"], e["responses_pav"], e["lower_bound"]) == (256, 192, True) and e["ratio"] == 256 / 192
    # ORM-RL ended just above it (smoothed [0 0 0 0 .001]): measured progress, counted from its arrival
    e = rl.sample_efficiency(curve([0, 0, 0, 0.001, 0.001]), curve([0, 0, 0.001, 0.002, 0.01]), n_eval=4096)
    assert e["target"] == pytest.approx(0.001) and (e["responses_orm"], e["responses_pav"], e["lower_bound"]) == \
        (256, 192, False)
    # PAV-RL never gets there: no ratio
    e = rl.sample_efficiency(curve([0.1, 0.2, 0.4, 0.5, 0.5]), curve([0.1, 0.2, 0.3, 0.3, 0.3]), n_eval=512)
    assert e["responses_pav"] is None and e["ratio"] is None
    # the mean over seeds leaves out the undefined ratio, counts it, and says that it includes a lower bound
    m = rl.mean_efficiency([{"ratio": 2.0, "lower_bound": False}, {"ratio": None, "lower_bound": False},
                            {"ratio": 3.0, "lower_bound": True}])
    assert m == {"mean": 2.5, "median": 2.5, "undefined": 1, "lower_bound": True}
    assert rl.mean_efficiency([{"ratio": None, "lower_bound": True}]) == {"mean": None, "median": None, "undefined": 1,
                                                                          "lower_bound": False}
    # the toy's three seeds: >= 30x, >= 30x, >= 20x
    m = rl.mean_efficiency([{"ratio": r, "lower_bound": True} for r in (30.0, 30.0, 20.0)])
    assert m["mean"] == pytest.approx(80 / 3) and m["median"] == 30.0


def test_kl_term_value_and_gradient_by_hand():
    """The k3 term alone (rewards 0, coefficient 1): its value and its gradient with respect to log pi."""
    logp = torch.tensor([[math.log(0.5), math.log(0.2)]], requires_grad=True)
    ref = torch.tensor([[math.log(0.25), math.log(0.4)]])
    loss = rl.pg_loss(logp, ref, torch.zeros(1, 2), torch.ones(1, 2), kl_coef=1.0)
    # r = ref - logp = ln 0.5, ln 2: exp(r) - r - 1 = 0.5 + 0.693147 - 1 = 0.193147 and 2 - 0.693147 - 1 = 0.306853
    assert loss.item() == pytest.approx((0.193147 + 0.306853) / 2, abs=1e-6)
    loss.backward()
    # d/d logp [exp(ref - logp) - (ref - logp) - 1] = 1 - exp(r): 0.5 and -1, over the two tokens
    assert logp.grad.tolist() == [pytest.approx([0.25, -0.5])]


def test_kl_term_expected_gradient_is_that_of_kl_ref_to_pi():
    """pg_loss's docstring: sampled from pi, the k3 term's gradient is in expectation that of KL(pi_ref || pi). Exact
    expectation over a three-way softmax."""
    z = torch.tensor([0.3, -1.0, 0.5], requires_grad=True)
    ref = torch.log_softmax(torch.tensor([1.0, 0.2, -0.4]), -1)
    pi = torch.softmax(z, -1).detach()
    expected = torch.zeros(3)
    for a in range(3):
        logp = torch.log_softmax(z, -1)[a].view(1, 1)
        g, = torch.autograd.grad(rl.pg_loss(logp, ref[a].view(1, 1), torch.zeros(1, 1), torch.ones(1, 1), 1.0), z)
        expected += pi[a] * g
    kl_ref_pi = (ref.exp() * (ref - torch.log_softmax(z, -1))).sum()
    want, = torch.autograd.grad(kl_ref_pi, z)
    torch.testing.assert_close(expected, want)
    kl_pi_ref = (torch.softmax(z, -1) * (torch.log_softmax(z, -1) - ref)).sum()
    other, = torch.autograd.grad(kl_pi_ref, z)
    assert not torch.allclose(expected, other, atol=1e-3)                # the two directions differ away from pi_ref
