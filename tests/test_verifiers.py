"""The verifiers (section 4.2): one-pass scoring, the loss on soft labels, a fit to exact Q-values on `planted`, the BoK
transform, the PAV's scores and the effective reward, and the verifier cache."""

import copy
import dataclasses
import math
import os
import random
import sys

import pytest
import torch
import torch.nn.functional as F

import data
import pav
from conftest import bigram_llama, tiny_llama

# arith ids: digits 0-9, "+" 10, "-" 11, "=" 12, ":" 13, "Q" 14, "A" 15, "\n" 16, EOS 17, BOS 18, PAD 19.
A_EOS, A_PAD = 17, 19
# planted ids: tokens 0-13, EOS 14, BOS 15, PAD 16.
P_EOS, P_BOS = 14, 15
PLANTED_RESPONSES = [[1, 2, 3], [3, 6, 0, 3, 5, P_EOS], [7], [4, 4, 4, 4, 4, 4, 4, 4, 4, 4], [9, P_EOS]]  # 1-10 tokens


def random_verifier(vocab, seed=0):
    """A tiny random Verifier whose head is set by hand, larger than nn.Linear's default init, so that its scores
    spread well away from 0.5 and the comparisons below have teeth."""
    torch.manual_seed(seed)
    v = pav.Verifier(tiny_llama(vocab, seed=seed), top_layers=1)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        v.head.weight.copy_(torch.randn(v.head.weight.shape, generator=g) * 0.5)
        v.head.bias.fill_(0.1)
    return v.eval()


def arith_batch(arith):
    """Prompts and responses of several steps and lengths: finished, cut mid-step, at the answer, and empty."""
    tok = arith.tokenizer
    prompts = [data.prompt_ids(tok, p) for p in arith.problems(5, random.Random(0))]
    responses = [tok.encode("5+6=1\n1-0=1\n1+8=9\n9+5=4\nA:4") + [A_EOS], tok.encode("1+2=3\n3+"),
                 tok.encode("A:3") + [A_EOS], [], tok.encode("9-9=0\n0+9=9\n")]
    return prompts, responses


# --------------------------------------------------------------------------------------------------------------
# Scoring every prefix in one pass

def test_score_rows_positions_by_hand(arith):
    tok = arith.tokenizer
    prompt = tok.encode("Q:1+2+3+4+5\n", add_special_tokens=True)            # BOS + 12 tokens: last at index 12
    assert len(prompt) == 13
    responses = [tok.encode("1+2=3\n3+3=6\nA:6") + [A_EOS],                  # steps end at 6, 12, 15 (EOS) -> 16
                 tok.encode("A:"),                                           # one unfinished step
                 [],                                                         # the bare problem only
                 tok.encode("1+2=3\n3+")]                                    # a cut second step
    table = data.step_end_table(tok, "\n")
    ids, mask, pos, pos_mask = pav.score_rows(tok, [prompt] * 4, responses, table)
    assert ids.shape == mask.shape == (4, 29) and pos.shape == pos_mask.shape == (4, 4)
    assert pos.tolist() == [[12, 18, 24, 28], [12, 14, 0, 0], [12, 0, 0, 0], [12, 18, 20, 0]]
    assert pos_mask.tolist() == [[True] * 4, [True, True, False, False], [True, False, False, False],
                                 [True, True, True, False]]
    # the tokens read: the prompt's newline, each step's newline, then EOS / the last token of a cut step
    assert ids[0, pos[0]].tolist() == [16, 16, 16, A_EOS]
    assert ids[1, 14].item() == 13 and ids[3, 20].item() == 10               # ":" and "+"
    for i, y in enumerate(responses):                                        # right padding
        n = len(prompt) + len(y)
        assert ids[i, :n].tolist() == prompt + y and (ids[i, n:] == A_PAD).all()
        assert mask[i, :n].all() and not mask[i, n:].any()


@pytest.mark.parametrize("batch", [256, 2])
def test_one_pass_equals_scoring_each_prefix(arith, batch):
    """predict_q on whole responses (right-padded batch) == predict_q on every prefix separately == a plain
    unpadded forward with the product of the Verifier's formula taken by hand."""
    tok = arith.tokenizer
    table = data.step_end_table(tok, "\n")
    v = random_verifier(len(tok))
    prompts, responses = arith_batch(arith)
    q, m = pav.predict_q(v, tok, prompts, responses, table, batch=batch)
    assert q.shape == (5, 6) and m.sum(1).tolist() == [6, 3, 2, 1, 3]
    assert (q[~m] == 0).all()
    assert q[m].std() > 0.05                                                  # not a constant: the check has teeth
    cut_prompts, cuts, where = [], [], []
    for i, (p, y) in enumerate(zip(prompts, responses)):
        for h, c in enumerate(pav.step_cuts(y, table) if y else [0]):
            cut_prompts.append(p)
            cuts.append(y[:c])
            where.append((i, h))
    assert len(cuts) == int(m.sum())
    q_cut, m_cut = pav.predict_q(v, tok, cut_prompts, cuts, table, batch=batch)
    last = m_cut.long().cumsum(1).argmax(1)                                   # each prefix's own last value
    for j, (i, h) in enumerate(where):
        assert m[i, h]
        assert q_cut[j, last[j]].item() == pytest.approx(q[i, h].item(), abs=1e-5), (i, h)
        assert alone(v, cut_prompts[j], cuts[j], table) == pytest.approx(q[i, h].item(), abs=1e-5), (i, h)


def alone(v, prompt, response, table):
    """Q_hat of the whole prefix prompt + response by the Verifier's formula, written out: an unpadded forward through
    the backbone, each token's log-probability under it times the surprise direction and the mapped embedding of the
    token itself added to its last hidden state, the top layers, the head at the last prompt token and at each step's last token, sigmoid(v) of the last times
    sigmoid(u) of all."""
    ends = [len(prompt) + c - 1 for c in (pav.step_cuts(response, table) if response else [0])]   # cut 0: the prompt
    x = prompt + response
    with torch.no_grad():
        h = v.lm.base_model(input_ids=torch.tensor([x])).last_hidden_state[0]             # (L, D)
        logits = v.lm.lm_head(h)                                                           # (L, V)
        logp = [0.0] + [torch.log_softmax(logits[t - 1], -1)[x[t]].item() for t in range(1, len(x))]
        h = h + torch.tensor(logp)[:, None] * v.surprise.weight[:, 0]
        h = h + v.lm.get_input_embeddings().weight[x] @ v.tokens.weight.T                # the token written there
        h = v.top(inputs_embeds=h[None]).last_hidden_state[0]                             # (L, D)
        value, survive = v.head(h[ends]).T.tolist()
    q = 1 / (1 + math.exp(-value[-1]))
    for u in survive:
        q *= 1 / (1 + math.exp(-u))
    return q


def test_train_verifier_settles_at_the_mean_label_where_it_cannot_tell_inputs_apart(planted):
    """Ten identical inputs (the bare problem), nine labelled 0.1 and one 0.9: the cross-entropy's minimum is their
    mean, 0.18 (no rounding, and no class balance: every prefix counts the same)."""
    tok = planted.tokenizer
    prompts, responses = [[P_BOS]] * 10, [[]] * 10
    labels = torch.tensor([[0.1]] * 9 + [[0.9]])                              # (R, H+1) with H = 0
    table = data.step_end_table(tok, None)
    cfg = pav.Config(task="planted", verifier_steps=150)
    v = pav.train_verifier(pav.Verifier(tiny_llama(len(tok), hidden=16, layers=1)), tok, prompts, responses, labels,
                           torch.ones(10, 1, dtype=torch.bool), table, cfg, desc="mean")
    q, _ = pav.predict_q(v, tok, prompts[:1], responses[:1], table)
    assert abs(q[0, 0].item() - 0.18) < 0.05, q


# --------------------------------------------------------------------------------------------------------------
# Soft labels are never rounded

@pytest.mark.parametrize("top_layers", [0, 1])
def test_soft_labels_train_toward_their_value(planted, top_layers):
    """Every prefix labelled 0.3: the verifier predicts 0.3, not 0 or 1 (rounding would give 0). Its backbone is frozen
    and left exactly as it was."""
    tok = planted.tokenizer
    table = data.step_end_table(tok, None)
    responses = PLANTED_RESPONSES
    prompts = [[P_BOS]] * len(responses)
    labels = torch.full((5, 11), 0.3)
    labelled = torch.ones(5, 11, dtype=torch.bool)                            # train_verifier masks past the end
    cfg = pav.Config(task="planted", verifier_steps=400)
    v = pav.Verifier(tiny_llama(len(tok), hidden=16, layers=1), top_layers=top_layers)
    before = [p.detach().clone() for p in v.lm.parameters()]
    v = pav.train_verifier(v, tok, prompts, responses, labels, labelled, table, cfg, desc="soft")
    assert all(torch.equal(a, b) for a, b in zip(before, v.lm.parameters()))
    assert all(p.requires_grad for p in v.parameters())                      # handed back trainable
    q, m = pav.predict_q(v, tok, prompts, responses, table)
    assert m.sum() == 3 + 6 + 1 + 10 + 2 + 5
    # a frozen random backbone alone (top_layers 0) gives the head features that vary with position: 0.053 measured
    assert (q[m] - 0.3).abs().max().item() < (0.03 if top_layers else 0.08), q[m]


def test_frozen_backbone_trains_the_same_with_and_without_its_cached_features(planted, monkeypatch):
    """A frozen backbone's features are computed once and cached, unless they would take too much memory: then they
    are recomputed at every step. Both give the same top layers and head."""
    tok = planted.tokenizer
    table = data.step_end_table(tok, None)
    responses = PLANTED_RESPONSES
    prompts = [[P_BOS]] * len(responses)
    labels = torch.rand(5, 11, generator=torch.Generator().manual_seed(0))
    cfg = pav.Config(task="planted", verifier_steps=20, micro_batch_size=16)
    weights = []
    for limit in (pav.FEATURE_CACHE_BYTES, 0):
        monkeypatch.setattr(pav, "FEATURE_CACHE_BYTES", limit)
        torch.manual_seed(0)
        v = pav.Verifier(tiny_llama(len(tok), hidden=16, layers=1), top_layers=1)
        start = torch.cat([p.detach().flatten() for p in v.parameters()])
        pav.train_verifier(v, tok, prompts, responses, labels, torch.ones(5, 11, dtype=torch.bool), table, cfg, "c")
        weights.append(torch.cat([p.detach().flatten() for p in v.parameters()]))
        assert (weights[-1] - start).abs().max() > 1e-3                      # it trained
    assert (weights[0] - weights[1]).abs().max() < 1e-5


def stochastic_planted_model():
    """On planted with target 1 2 3 4 5: BOS and 7 go to 1 or 9 with equal chance; 1 2 3 4 5 is then completed,
    9 and everything else end the response. So Q([]) = Q([7]) = 1/2 exactly, Q([1]) = 1, Q([9]) = 0."""
    succ = {v: P_EOS for v in range(17)} | {P_BOS: 1, 1: 2, 2: 3, 3: 4, 4: 5}
    model = bigram_llama(17, succ)
    with torch.no_grad():
        model.lm_head.weight[9, P_BOS] = model.lm_head.weight[1, P_BOS]
        model.lm_head.weight[1, 7] = model.lm_head.weight[9, 7] = model.lm_head.weight[1, P_BOS]
        model.lm_head.weight[P_EOS, 7] = 0.0
    return model


def test_collect_labels_counts_are_fractional():
    task = data.Planted(target=(1, 2, 3, 4, 5))
    tok = task.tokenizer
    problems = task.problems(1, random.Random(0)) * 6
    responses = [[7, 7, 1, 2, 3, 4, 5, P_EOS]] * 6
    n_mc = 64
    counts, labelled = pav.collect_labels(stochastic_planted_model(), task, tok, problems, responses, n_mc,
                                          pav.Config(task="planted"), pav.generator("labels", 0))
    assert counts.shape == (6, 9) and labelled.all()
    soft = counts / n_mc
    # prefixes [], [7], [7, 7]: Q = 1/2, so the counts are Binomial(64, 1/2); afterwards the chain finishes: Q = 1
    half = soft[:, :3]
    assert ((half > 0) & (half < 1)).all() and (half != 0.5).any()            # fractional, not rounded to 0 or 1
    assert abs(half.mean().item() - 0.5) < 4 * math.sqrt(0.25 / (n_mc * 18))
    assert (soft[:, 3:] == 1).all()
    assert counts.tolist() == counts.round().tolist()                         # counts are whole numbers of wins


# --------------------------------------------------------------------------------------------------------------
# PAV scores and the effective reward

def test_pav_score_bok_prover_by_hand(monkeypatch):
    """PAV.score with the PQM's Q^pi set by hand, K = 4: Q^mu = 1 - (1 - Q^pi)^4 and A^mu its differences, masked.
    Response 0 (3 steps): Q^pi 1/2, 3/4, 0, 1 -> Q^mu 15/16 = 0.9375, 255/256 = 0.99609375, 0, 1 -> A^mu 0.05859375,
    -0.99609375, 1. Response 1 (1 step): Q^pi 1/4, 1/2 -> Q^mu 175/256 = 0.68359375, 0.9375 -> A^mu 0.25390625."""
    q_pi = torch.tensor([[0.5, 0.75, 0.0, 1.0], [0.25, 0.5, 0.0, 0.0]])                  # (B, H+1), 0 past the end
    m = torch.tensor([[True] * 4, [True, True, False, False]])
    monkeypatch.setattr(pav, "predict_q", lambda *args: (q_pi.clone(), m.clone()))
    got_q, q_mu, a_mu, got_m, m_adv = pav.PAV(None, None, None, 4).score([[0]] * 2, [[1, 2, 3], [1]])
    assert got_q.tolist() == q_pi.tolist() and got_m.tolist() == m.tolist()
    assert q_mu.tolist() == [pytest.approx([0.9375, 0.99609375, 0.0, 1.0], abs=1e-7),
                             pytest.approx([0.68359375, 0.9375, 0.0, 0.0], abs=1e-7)]
    assert a_mu.tolist() == [pytest.approx([0.05859375, -0.99609375, 1.0], abs=1e-7),
                             pytest.approx([0.25390625, 0.0, 0.0], abs=1e-7)]
    assert m_adv.tolist() == [[True, True, True], [True, False, False]]


def test_effective_reward_by_hand():
    q_pi = torch.tensor([[0.2, 0.5, 0.4, 1.0], [0.1, 0.0, 0.0, 0.0]])         # (B, H+1)
    a_mu = torch.tensor([[0.1, -0.2, 0.3], [0.6, 0.0, 0.0]])                  # (B, H)
    assert torch.allclose(pav.effective_reward(q_pi, a_mu, 0.5), torch.tensor([[0.55, 0.3, 1.15], [0.3, 0.0, 0.0]]))
    assert torch.allclose(pav.effective_reward(q_pi, a_mu, 0.0), q_pi[:, 1:])
    assert torch.allclose(pav.effective_reward(q_pi, a_mu, 2.0), torch.tensor([[0.7, 0.0, 1.6], [1.2, 0.0, 0.0]]))


# --------------------------------------------------------------------------------------------------------------
# A verifier fitted to exact Q-values on planted

GAMMA = 30.0   # spreads Q over [0, 1]: at gamma = 10 the mean label is 0.05 and a constant is within 0.047 of it


def prover_responses(task, gamma, n, seed):
    """n responses of the gamma-prover (our pi here), EOS kept: tokens until EOS or the 10-token limit."""
    g = torch.Generator().manual_seed(seed)
    P = task.prover_probs(gamma).float()
    k = torch.zeros(n, dtype=torch.long)
    toks = torch.zeros(n, task.max_new_tokens, dtype=torch.long)
    for t in range(task.max_new_tokens):
        toks[:, t] = torch.multinomial(P[k], 1, generator=g).squeeze(1)
        k = task.delta[k, toks[:, t]]
    return [row[:row.index(P_EOS) + 1] if P_EOS in row else row for row in toks.tolist()]


def exact_labels(task, responses, gamma):
    """Exact Q^pi of every prefix (R, 11) by the DP, and the mask of prefixes that exist."""
    V = task.exact_values(gamma)
    q = torch.zeros(len(responses), task.max_new_tokens + 1, dtype=torch.float64)
    m = torch.zeros(q.shape, dtype=torch.bool)
    for i, y in enumerate(responses):
        for h in range(len(y) + 1):
            q[i, h], m[i, h] = task.exact_q(y[:h], gamma, V), True
    return q, m


@pytest.fixture(scope="module")
def planted_fit(planted):
    """A verifier with a random, frozen 2-layer backbone and two fresh layers on top, trained on 400 gamma-prover
    responses labelled by the DP; 300 held-out responses from another seed."""
    tok = planted.tokenizer
    table = data.step_end_table(tok, None)
    train = prover_responses(planted, GAMMA, 400, seed=1)
    test = prover_responses(planted, GAMMA, 300, seed=2)
    q_train, m_train = exact_labels(planted, train, GAMMA)
    q_test, m_test = exact_labels(planted, test, GAMMA)
    cfg = pav.Config(task="planted", verifier_steps=1000, seed=0)
    torch.manual_seed(0)
    v = pav.Verifier(tiny_llama(len(tok), hidden=48, layers=2, init=0.02), top_layers=2)
    pav.train_verifier(v, tok, [[P_BOS]] * len(train), train, q_train.float(), m_train, table, cfg, desc="fit")
    pred, m_pred = pav.predict_q(v, tok, [[P_BOS]] * len(test), test, table)
    assert torch.equal(m_pred, m_test)
    return test, pred.double(), q_test, m_test, q_train[m_train]


@pytest.mark.slow
def test_verifier_recovers_exact_q_on_planted(planted_fit):
    test, pred, exact, m, train_labels = planted_fit
    assert m.sum() > 2500
    assert 0.1 < (exact[m] >= 0.5).double().mean() < 0.9                    # both buckets populated: 0.26 high
    constant = (exact[m] - train_labels.median()).abs().mean().item()          # best constant: 0.237
    mae = (pred[m] - exact[m]).abs().mean().item()
    assert mae < 0.03, mae                                                     # measured 0.0127
    assert mae < constant / 8, (mae, constant)
    assert abs((pred[m] - exact[m]).mean().item()) < 0.01                      # measured bias +0.0012
    adv_err = (pav.advantages(pred) - pav.advantages(exact))[m[:, 1:]].abs().mean().item()
    assert adv_err < 0.04, adv_err                                             # measured 0.019


@pytest.mark.slow
def test_bok_of_the_trained_pqm_matches_monte_carlo(planted, planted_fit):
    """Bo4 from the fitted PQM against Bo4 of the exact Q (fit error) and against the unbiased estimate from n = 64
    gamma-prover rollouts per prefix (fit error + Monte Carlo noise, the latter's size computed exactly)."""
    test, pred, exact, m, _ = planted_fit
    K, n = 4, 64
    b_pred, b_exact = pav.bok_closed(pred, K)[m], pav.bok_closed(exact, K)[m]
    fit = (b_pred - b_exact).abs().mean().item()
    assert fit < 0.05, fit                                                     # measured 0.018 (<= 4 x Q's MAE)
    prefixes = [y[:h] for y, row in zip(test, m) for h in range(int(row.sum()))]
    assert len(prefixes) == len(b_exact)
    wins = planted.prover_complete(prefixes, GAMMA, n, generator=torch.Generator().manual_seed(0))
    counts = wins.view(-1, n).sum(1)
    b_mc = pav.bok_unbiased(counts, n, K).double()
    # The Monte Carlo noise exactly: for each prefix, the distribution of bok_unbiased(c, n, K), c ~ Bin(n, Q).
    c = torch.arange(n + 1, dtype=torch.float64)
    q = exact[m][:, None]
    pmf = torch.tensor([math.comb(n, i) for i in range(n + 1)], dtype=torch.float64) * q ** c * (1 - q) ** (n - c)
    est = pav.bok_unbiased(c, n, K).double()                                   # (n + 1,)
    dev = (est[None] - b_exact[:, None]).abs()                                 # (N, n + 1)
    e_abs, e_sq = (pmf * dev).sum(1), (pmf * dev ** 2).sum(1)
    N = len(b_exact)
    sd_abs = ((e_sq - e_abs ** 2).sum().sqrt() / N).item()                    # s.d. of the mean |noise|
    sd_signed = (e_sq.sum().sqrt() / N).item()                                 # s.d. of the mean signed noise
    noise = (b_mc - b_exact).abs().mean().item()
    # measured 0.0312 against the expected 0.0317 (s.d. 0.0006)
    assert abs(noise - e_abs.mean().item()) < 4 * sd_abs, (noise, e_abs.mean().item())
    assert abs((b_mc - b_exact).mean().item()) < 4 * sd_signed                # unbiased: measured 0.0001, s.d. 0.001
    # the PQM's Bo4 against the Monte Carlo Bo4: within fit error + expected noise (triangle inequality), and on
    # average within the fit's bias + 4 s.d. of the noise
    total = (b_pred - b_mc).abs().mean().item()
    assert total < fit + e_abs.mean().item() + 4 * sd_abs, (total, fit)       # measured 0.041 < 0.018 + 0.032 + 0.002
    assert total < 0.06, total
    assert abs((b_pred - b_mc).mean().item()) < abs((b_pred - b_exact).mean().item()) + 4 * sd_signed   # 0.004


# --------------------------------------------------------------------------------------------------------------
# The verifier cache key

def test_verifier_settings_follow_every_training_setting(facts):
    base = pav.Config()
    key = pav.verifier_settings(facts, base)
    for name, value in [("n_problems", 100), ("n_mc", 8), ("verifier_steps", 6), ("seed", 1), ("d_model", 64),
                        ("n_layers", 2), ("verifier_model", "clean")]:
        assert pav.verifier_settings(facts, dataclasses.replace(base, **{name: value})) != key, name
    # settings of the report, RL and search only; and K of the BoK prover: every BoK(pi) comes from one Q^pi verifier
    for name, value in [("alpha", 1.0), ("eval_problems", 64), ("prover", "bo2"), ("batch_rows", 64),
                        ("micro_batch_size", 8)]:
        assert pav.verifier_settings(facts, dataclasses.replace(base, **{name: value})) == key, name
    assert pav.verifier_settings(data.get_task("arith"), base) != key                   # another task's policy


def test_verifiers_train_only_what_is_asked_and_reuse_the_cached_labels(planted, tmp_path, monkeypatch):
    """rl.py asks for the PQM alone; a later caller that needs the ORM too trains it from the cached labels (no new
    rollouts), and both come out as if trained together."""
    cfg = pav.Config(task="planted", n_problems=6, n_mc=2, verifier_steps=3, batch_rows=64, verifier_model="policy")
    policy = tiny_llama(len(planted.tokenizer), hidden=32, layers=1)
    cpu = torch.device("cpu")

    def train(out, names, state=0):
        torch.manual_seed(state)                # whatever ran before: the labels draw from a stream of their own
        return pav.load_or_train_verifiers(policy, planted, planted.tokenizer, dataclasses.replace(cfg, out=str(out)),
                                           cpu, names=names)

    alone = train(tmp_path / "a", ["pqm"])
    [path] = [os.path.join(tmp_path / "a" / "seed0" / "verifiers", d) for d in os.listdir(tmp_path / "a" / "seed0" / "verifiers")]
    assert list(alone) == ["pqm"] and not os.path.exists(os.path.join(path, "orm"))
    labels_at = lambda out: os.path.join(out, "seed0", "labels", "6x2.pt")   # n_problems x n_mc, one per seed
    assert os.path.exists(labels_at(tmp_path / "a"))
    known = data.read_json(os.path.join(path, "backbone.json"))                  # the policy's own: the same accuracy
    assert known["verifier_model"] == "policy" and known["backbone_accuracy"] == known["policy_accuracy"]

    def no_rollouts(*args, **kwargs):
        raise AssertionError("the labels are cached: no rollouts needed")
    with monkeypatch.context() as m:
        m.setattr(pav, "rollout_responses", no_rollouts)
        m.setattr(pav, "collect_labels", no_rollouts)
        later = train(tmp_path / "a", ("orm", "pqm"))
    with monkeypatch.context() as m:   # another backbone trains from the same labels (its accuracy is measured anew)
        m.setattr(pav, "collect_labels", no_rollouts)
        other = tmp_path / "other"
        other_policy = tiny_llama(len(planted.tokenizer), hidden=32, layers=1, seed=1)
        other_policy.save_pretrained(other)
        planted.tokenizer.save_pretrained(other)
        pav.load_or_train_verifiers(policy, planted, planted.tokenizer, dataclasses.replace(
            cfg, out=str(tmp_path / "a"), verifier_model=str(other)), cpu, names=("pqm",))
    together = train(tmp_path / "b", ("orm", "pqm"), state=1)
    assert set(later) == set(together) == {"orm", "pqm"}
    labels = [torch.load(labels_at(out), weights_only=True) for out in (tmp_path / "a", tmp_path / "b")]
    assert labels[0]["responses"] == labels[1]["responses"] and torch.equal(labels[0]["counts"], labels[1]["counts"])
    for name in ("orm", "pqm"):
        for (k, v), w in zip(later[name].state_dict().items(), together[name].state_dict().values()):
            assert torch.equal(v, w), (name, k)
    # and the ORM trained: its head moved from the fresh head of a verifier built with the same seed
    torch.manual_seed(pav.stream_seed("verifier", cfg.seed))
    fresh = pav.Verifier(copy.deepcopy(policy))
    assert not torch.equal(fresh.head.weight, later["orm"].head.weight)


def test_verifier_loss_by_hand():
    """train_verifier's loss: binary cross-entropy against soft labels, averaged over the labelled prefixes only."""
    logits = torch.tensor([[0.0, math.log(3.0), 5.0]])                  # Q_hat = 0.5, 0.75, and an unlabelled one
    labels = torch.tensor([[0.5, 0.25, 1.0]])
    labelled = torch.tensor([[True, True, False]])
    # -(0.5 ln 0.5 + 0.5 ln 0.5) = 0.693147; -(0.25 ln 0.75 + 0.75 ln 0.25) = 1.111643; their mean
    assert pav.verifier_loss(logits, labels, labelled).item() == pytest.approx(0.902395, abs=1e-6)


def test_each_verifier_trains_on_its_own_targets_by_hand(planted, tmp_path, monkeypatch):
    """What load_or_train_verifiers feeds train_verifier: the ORM the outcome of each seed rollout at its last
    labelled prefix only, the PQM the soft label successes / n_mc at every labelled prefix. Hand-made labels."""
    T = planted.target
    responses = [T + [14], [1, 2, 14]]                                     # the target, then EOS; a miss
    counts = torch.tensor([[2.0, 3, 4, 4, 4, 4, 4, 0], [1, 0, 0, 0, 0, 0, 0, 0]])
    labelled = torch.tensor([[1, 1, 1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 0, 0, 0, 0]]).bool()
    monkeypatch.setattr(pav, "labelled_rollouts", lambda *a, **k: (responses, counts, labelled))
    monkeypatch.setattr(pav, "backbone_accuracy", lambda *a, **k: None)
    fed = {}

    def spy(verifier, tokenizer, prompts, responses_, labels, labelled_, table, cfg, desc):
        fed[desc] = (labels, labelled_)
        return verifier
    monkeypatch.setattr(pav, "train_verifier", spy)
    cfg = pav.Config(task="planted", n_problems=2, n_mc=4, verifier_steps=1, out=str(tmp_path))
    pav.load_or_train_verifiers(tiny_llama(len(planted.tokenizer), hidden=32, layers=1), planted, planted.tokenizer,
                                cfg, torch.device("cpu"))
    orm, orm_where = fed["orm"]
    assert orm_where.tolist() == [[0, 0, 0, 0, 0, 0, 1, 0], [0, 0, 0, 1, 0, 0, 0, 0]]   # the last labelled prefix
    assert orm[orm_where].tolist() == [1.0, 0.0]                                          # the outcomes
    pqm, pqm_where = fed["pqm"]
    assert pqm_where.tolist() == labelled.tolist()
    assert pqm[labelled].tolist() == [0.5, 0.75, 1, 1, 1, 1, 1, 0.25, 0, 0, 0]            # soft, never rounded


def test_label_statistics_by_hand():
    """The share of labelled prefixes with any success, and what the labels cost in rollouts."""
    counts = torch.tensor([[1.0, 0, 0], [0, 0, 0], [2, 1, 4]])
    labelled = torch.tensor([[1, 1, 0], [1, 1, 1], [1, 1, 1]]).bool()
    share = pav.any_success_share(counts, labelled)
    # 4 of 8 labelled prefixes; the bare problem of rows 0 and 2; the last prefix of row 2 only (row 0's is index 1)
    assert share == {"all": 0.5, "first": pytest.approx(2 / 3), "last": pytest.approx(1 / 3)}
    # 3 seed rollouts + 4 rollouts from each of the 8 - 3 prefixes that are not a response's complete last one
    assert pav.labelling_rollouts(labelled, 4) == 3 + 5 * 4
