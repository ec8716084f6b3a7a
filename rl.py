"""Online RL with process advantage verifiers: REINFORCE on the dense effective reward against outcome-only RL.

    python rl.py                                    # arith, CPU: ORM-RL and PAV-RL from the same start, a few minutes
    python rl.py --task planted                     # the paper's toy (section 3.3): exact A^mu of the gamma = 10 prover
    python rl.py --task planted --gammas 1,5,9,13,17   # prover-strength sweep (Fig. 3b)
    python rl.py --seeds 0,1,2                      # three seeds, mean and spread
    python rl.py --n-ops 8 --n-problems 2048 --verifier-model clean   # sparse outcome reward: ORM-RL stalls or learns late
    python rl.py --hard-facts --p-err 0.9 --verifier-model clean   # wrong facts to unlearn, a verifier that knows them
    python rl.py --resume                           # go on from the last checkpoint of an interrupted run
    python rl.py --prover bo1                       # control: mu = pi, the base policy as its own prover
    python rl.py --reward-q                         # control: reward Q^mu instead of A^mu (appendix G)
    (on a GPU the same commands run there: pav.pick_device chooses cuda and bf16 autocast)

What it does, top to bottom:
1. loads (or builds, through pav.py) the base policy pi and, on `arith`, the PAV (the Q^pi verifier, from which
   A^mu of mu = Bo4(pi) is derived); on `planted` the advantage is exact, from the gamma-prover's dynamic program;
2. trains two copies of pi with the same seed and the same number of sampled responses: ORM-RL (alpha = 0, the
   outcome reward alone, Eq. 3) and PAV-RL (the per-step effective reward of Eq. 5), evaluating both on held-out
   problems every `eval_every` iterations, one log line per iteration (mean outcome reward; on arith `sound`, the
   share of responses with every line right, which a lucky answer is not; mean and std of the advantage term, KL,
   entropy, length, steps), sampled responses with their per-step rewards written to `samples_<run>.txt` now and
   then, a checkpoint every `ckpt_every` iterations;
3. prints and saves (`runs/<task>/rl.json`, `rl.png`) the accuracy curves against sampled responses (Fig. 7b), the
   sample-efficiency ratio, the final accuracy gap, and Pass@N of the start, ORM-RL and PAV-RL policies (Fig. 8a);
   on `planted`, also Pass@N at an early iteration (Fig. 3c) and, with several gammas, the sweep (Fig. 3b).

Differences from the paper:
1. Baseline: the leave-one-out mean outcome of the other `group - 1` responses to the same problem (RLOO), not a
   learned value function. It is unbiased, needs no second network, and with 4 responses per problem it is as good
   as a value head at our scale; the paper uses its value function only as a baseline too.
2. The baseline is subtracted from the outcome term Rex(y) (the Monte Carlo estimate of Q^pi(s_h, a_h)) only;
   alpha * A^mu enters as it is, as in Eq. 5.
3. The KL penalty to the start policy (coefficient 0.001, as in the paper) is the k3 estimator
   exp(r) - r - 1 with r = log pi_ref - log pi on the sampled tokens, added to the loss.
4. One on-policy gradient step per batch (no clipping or importance ratios), Adam, constant learning rate.
5. On `planted` the policy is a tiny Llama (not a MADE MLP), warm-started on gamma = 3 demonstrations, not 5, so that
   outcome-only RL samples no success (`--demo-gamma`, pav.py); A^mu comes from 128 prover rollouts per prefix, as
   the paper's '>100' (`--toy-mc 0` makes it exact). The toy runs 600 iterations: ORM-RL's 38,400 responses are 10x
   what PAV-RL needs for a measurable gain, so a stalled ORM-RL's lower-bound ratio can show the paper's '>10x'.
"""

import copy
import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

import data
import pav
from pav import arg

# --------------------------------------------------------------------------------------------------------------
# Config: pav.py's flags (policy, verifiers) plus the RL ones

TASK_DEFAULTS = {   # used where a flag is left at its "task default" value
    "arith": {"alpha": 3.0, "iterations": 80, "early_iteration": 0, "eval_every": 4, "lr": 3e-4},
    "planted": {"alpha": 1.0, "iterations": 600, "early_iteration": 100, "eval_every": 10, "lr": 1e-3},
}


@dataclass
class RLConfig(pav.Config):
    alpha: float = arg(math.nan, "weight of A^mu in the effective reward Rex + alpha * A^mu; nan: task default "
                                 "(arith 3, planted 1 as in the paper)")
    gammas: str = arg("10", "planted: the gamma-prover mu; several values (e.g. 1,5,9,13,17) run the sweep of Fig. 3b")
    seeds: str = arg("0", "RL seeds; each runs ORM-RL and PAV-RL from the same base policy")
    iterations: int = arg(0, "policy-gradient iterations per run; 0: task default (arith 80, planted 600)")
    batch_size: int = arg(64, "sampled responses per iteration (the same for both runs)")
    group: int = arg(4, "responses per problem; the leave-one-out baseline averages the others of its group")
    lr: float = arg(math.nan, "Adam learning rate of the policy; nan: task default (arith 3e-4, planted 1e-3 as in "
                              "the paper; at 1e-3 both arith runs swing by 0.1 between evaluations)")
    kl: float = arg(0.001, "weight of the KL penalty to the start policy; 0 switches it off")
    reward_q: bool = arg(False, "control (appendix G): reward Q^mu of each step instead of its advantage A^mu")
    eval_every: int = arg(0, "iterations between evaluations on held-out problems; 0: task default (arith 4, planted 10)")
    ckpt_every: int = arg(10, "iterations between checkpoints")
    samples_every: int = arg(20, "iterations between writing a few sampled responses with their step rewards")
    pass_n: int = arg(64, "largest N of the Pass@N report (samples per problem)")
    pass_problems: int = arg(128, "held-out problems of the Pass@N report")
    early_iteration: int = arg(-1, "also report Pass@N at this iteration (Fig. 3c); -1: task default "
                                   "(planted 100, arith none)")
    advantages: str = arg("pav", "where A^mu of mu = BoK(pi) comes from: pav (arith: the trained verifier; planted: the "
                                 "gamma-prover) or mc (rl_mc fresh rollouts of the current policy per prefix at every "
                                 "iteration: slow; with --prover bo1 on planted, the mu = pi control)")
    toy_mc: int = arg(128, "planted: prover rollouts per prefix for Q^mu (the paper: '>100'); 0: exact dynamic program")
    rl_mc: int = arg(32, "--advantages mc: rollouts per prefix (at least K of the BoK prover)")
    resume: bool = arg(False, "go on from the last checkpoint of each run instead of starting over")


def check(cfg):
    """Fill in task defaults, then reject nonsense before any work."""
    pav.resolve_task(cfg)
    defaults = TASK_DEFAULTS["planted" if cfg.task == "planted" else "arith"]   # --data: arith's
    if math.isnan(cfg.alpha):
        cfg.alpha = defaults["alpha"]
    if math.isnan(cfg.lr):
        cfg.lr = defaults["lr"]
    if cfg.iterations == 0:
        cfg.iterations = defaults["iterations"]
    if cfg.eval_every == 0:
        cfg.eval_every = defaults["eval_every"]
    if cfg.early_iteration == -1:
        cfg.early_iteration = defaults["early_iteration"]
    if cfg.seed != 0:
        pav.fail("rl.py takes --seeds: each seed draws the whole pipeline (policy, labels, verifier and RL)")
    pav.check_config(cfg)
    try:
        seeds = [int(s) for s in cfg.seeds.split(",")]
    except ValueError:
        pav.fail(f"--seeds must be a comma-separated list of integers, got {cfg.seeds!r}")
    gammas = [float(g) for g in cfg.gammas.split(",")]
    if cfg.toy_mc < 0:
        pav.fail(f"--toy-mc must be 0 (exact) or positive, got {cfg.toy_mc}")
    for name in ("iterations", "batch_size", "group", "eval_every", "ckpt_every", "samples_every", "pass_n",
                 "pass_problems"):
        if getattr(cfg, name) <= 0:
            pav.fail(f"--{name.replace('_', '-')} must be positive, got {getattr(cfg, name)}")
    if cfg.group < 2 or cfg.batch_size % cfg.group:
        pav.fail(f"--batch-size {cfg.batch_size} must be a multiple of --group {cfg.group}, and the group at least 2 "
                 "(the leave-one-out baseline needs another response)")
    if not (cfg.lr > 0 and cfg.kl >= 0):
        pav.fail(f"--lr must be positive and --kl non-negative, got {cfg.lr} and {cfg.kl}")
    if cfg.advantages not in ("pav", "mc"):
        pav.fail(f"--advantages must be pav or mc, got {cfg.advantages!r}")
    if cfg.advantages == "mc" and (pav.prover_k(cfg) is None or cfg.rl_mc < pav.prover_k(cfg)):
        pav.fail("--advantages mc needs a BoK prover and --rl-mc at least K")
    if cfg.task == "planted" and cfg.prover != "bo4" and cfg.advantages != "mc":
        pav.fail("on planted the prover is the gamma-prover (--gammas); --prover boK needs --advantages mc there")
    return seeds, gammas


# --------------------------------------------------------------------------------------------------------------
# The method: per-step rewards on tokens, the leave-one-out baseline, the policy-gradient loss

def loo_baseline(outcomes, group):
    """b_i = mean of Rex over the other responses of the same problem (rows of a problem are adjacent). (N,) -> (N,)"""
    g = outcomes.view(-1, group)                                          # (N / group, group)
    return ((g.sum(1, keepdim=True) - g) / (group - 1)).view(-1)          # (N,)


def step_index(ids, mask, table):
    """The step each response token belongs to, 0-based: (N, T). Steps end where data.step_ends says."""
    ends = data.step_ends(ids, mask, table).long()                        # (N, T)
    return (ends.cumsum(-1) - ends).clamp(min=0)                          # (N, T): ends seen before token t


def step_rewards(outcomes, step_term, group, alpha):
    """The reward of every step: outcomes (N,) Rex(y); step_term (N, H) A^mu(s_h, a_h) of each step (or Q^mu for the
    appendix-G control). Returns (N, H)."""
    # Eq. 5: step h's reward is Q^pi(s_h, a_h) + alpha * A^mu(s_h, a_h), Q^pi estimated by the outcome Rex(y), from
    # which the leave-one-out baseline is subtracted
    return (outcomes - loo_baseline(outcomes, group))[:, None] + alpha * step_term     # (N, H)


def token_rewards(outcomes, step_term, steps, group, alpha):
    """The reward of every response token: that of the step it belongs to (only step h's own A^mu weights step h's
    tokens). steps (N, T) each token's step; returns (N, T)."""
    per_step = step_rewards(outcomes, step_term, group, alpha)                          # (N, H)
    return per_step.gather(1, steps.clamp(max=per_step.shape[1] - 1))                   # (N, T)


def pg_loss(logp, ref_logp, rewards, mask, kl_coef):
    """REINFORCE with a KL penalty, averaged over the response tokens of the batch:

        loss = mean_t [ -log pi(y_t | x, y_<t) * reward_t  +  kl_coef * (exp(r_t) - r_t - 1) ],  r_t = ref_t - logp_t

    logp (N, T) carries the gradient; ref_logp (N, T) comes from the frozen start policy; rewards (N, T) are constant.
    The k3 term is an unbiased, non-negative estimate of KL(pi || pi_ref) from samples of pi. Differentiated as a loss
    (as GRPO does), its expected gradient at a token is that of KL(pi_ref || pi), not of KL(pi || pi_ref); the two agree
    to first order near pi_ref, and at kl_coef 0.001 the difference does not matter.
    """
    r = ref_logp - logp                                                   # (N, T)
    per_token = -logp * rewards.detach() + kl_coef * (r.exp() - r - 1)    # (N, T)
    return (per_token * mask).sum() / mask.sum().clamp(min=1)


def response_logprobs(model, prompts, ids, mask, pad_id):
    """log pi(y_t | x, y_<t) of each response token, one teacher-forced pass: (N, T). Prompts (token lists) are
    left-padded so that every response (ids, mask: (N, T), right-padded) starts at the same column."""
    device = next(model.parameters()).device
    p_ids, p_mask = pav.left_pad(prompts, pad_id, device)                 # (N, P)
    P = p_ids.shape[1]
    x = torch.cat([p_ids, ids.to(device)], 1)                             # (N, P + T)
    attn = torch.cat([p_mask, mask.to(device).long()], 1)                 # (N, P + T)
    with pav.autocast(device):
        logits = model(input_ids=x, attention_mask=attn, position_ids=(attn.cumsum(-1) - 1).clamp(min=0)).logits
    logits = logits[:, P - 1:-1].float()                                  # (N, T, V): position P-1+t predicts y_t
    logp = torch.log_softmax(logits, -1).gather(-1, ids.to(device)[..., None]).squeeze(-1)   # (N, T)
    return logp * mask.to(device)


# --------------------------------------------------------------------------------------------------------------
# Step advantages: the learned PAV on arith, the exact dynamic program on planted

class GammaProver:
    """planted: Q^mu and A^mu of the gamma-prover (section 3.3), from `n` prover rollouts per prefix as in the paper
    ('>100 rollouts'), or exact by dynamic programming when n = 0."""

    def __init__(self, task, gamma, n=0):
        self.task, self.gamma, self.n, self.V = task, gamma, n, task.exact_values(gamma)

    def score(self, problems, prompts, responses, policy, seed):
        H = max(len(y) for y in responses)
        q = torch.zeros(len(responses), H + 1)                            # (N, H+1), Q^mu after 0..H steps
        m = torch.zeros(len(responses), H + 1, dtype=torch.bool)
        for i, y in enumerate(responses):
            m[i, :len(y) + 1] = True
        if self.n == 0:
            for i, y in enumerate(responses):
                q[i, :len(y) + 1] = torch.tensor([self.task.exact_q(y[:h], self.gamma, self.V)
                                                  for h in range(len(y) + 1)])
        else:   # Eq. 1 by Monte Carlo: the fraction of n prover completions of each prefix that succeed
            prefixes = [y[:h] for y in responses for h in range(len(y) + 1)]
            g = torch.Generator().manual_seed(seed)
            wins = self.task.prover_complete(prefixes, self.gamma, self.n, g).view(-1, self.n).mean(1)   # (prefixes,)
            q[m] = wins
        return q, q, pav.advantages(q) * m[:, 1:], m, m[:, 1:]


class MonteCarloProver:
    """Q^mu of every prefix from `n` fresh rollouts, mu = BoK(pi) of the policy being trained at this iteration: with
    K = 1, mu = pi, section 3.2's control (`--advantages mc --prover bo1`), whose advantages A^pi add nothing to outcome
    RL in expectation. Slow: n rollouts from every prefix of every response at every iteration."""

    def __init__(self, task, tokenizer, cfg, k, n):
        self.task, self.tokenizer, self.cfg, self.k, self.n = task, tokenizer, cfg, k, n
        self.table = data.step_end_table(tokenizer, task.delimiter)

    def score(self, problems, prompts, responses, policy, seed):
        cuts = [pav.step_cuts(y, self.table) for y in responses]
        prefixes = [(i, y[:c]) for i, (y, cs) in enumerate(zip(responses, cuts)) for c in cs]
        g = torch.Generator(next(policy.parameters()).device).manual_seed(seed)
        counts = pav.mc_successes(policy, self.task, self.tokenizer, problems, prefixes, self.n, self.cfg, g)
        H = max(len(cs) for cs in cuts)
        q = torch.zeros(len(responses), H)                                # (N, H+1)
        m = torch.zeros(len(responses), H, dtype=torch.bool)
        j = 0
        for i, cs in enumerate(cuts):
            # Q^{BoK} from n >= K rollouts: the unbiased 1 - C(n - c, K) / C(n, K)
            q[i, :len(cs)], m[i, :len(cs)] = pav.bok_unbiased(counts[j:j + len(cs)], self.n, self.k), True
            j += len(cs)
        return q, q, pav.advantages(q) * m[:, 1:], m, m[:, 1:]


class LearnedPAV:
    """arith: A^mu from the trained verifiers (pav.PAV), one forward pass per response."""

    def __init__(self, pav_):
        self.pav = pav_

    def score(self, problems, prompts, responses, policy, seed):
        return self.pav.score(prompts, responses)


def step_terms(scorer, problems, prompts, responses, reward_q, policy, seed):
    """(N, H) per-step term of the reward, A^mu of each step (or Q^mu after it, for the control), 0 past the end,
    and its mask (N, H). problems: the problem of each response; policy: the one being trained; seed: the prover's."""
    q_pi, q_mu, a_mu, m, m_adv = scorer.score(problems, prompts, responses, policy, seed)
    return ((q_mu[:, 1:] * m_adv) if reward_q else a_mu), m_adv


# --------------------------------------------------------------------------------------------------------------
# One run: sample, reward, update; evaluate, log, checkpoint

def pass_at_n(model, task, tokenizer, cfg, seed, iteration):
    """Pass@N for N = 1, 2, 4, ..., pass_n on held-out problems, unbiased from pass_n samples per problem."""
    g = pav.generator("pass@n", seed, iteration, next(model.parameters()).device)
    problems = pav.eval_problems(task, cfg)[:cfg.pass_problems]
    counts = pav.mc_successes(model, task, tokenizer, problems, [(i, []) for i in range(len(problems))], cfg.pass_n,
                              cfg, g)
    ns = [2 ** i for i in range(int(math.log2(cfg.pass_n)) + 1)]
    # pass@N = 1 - C(n - c, N) / C(n, N): the Best-of-N estimator of pav.py
    return {"n": ns, "pass": [float(pav.bok_unbiased(counts, cfg.pass_n, k).mean()) for k in ns]}


def evaluate(model, task, tokenizer, cfg, seed, iteration):
    g = pav.generator("rl eval", seed, iteration, next(model.parameters()).device)
    return pav.accuracy(model, task, tokenizer, pav.eval_problems(task, cfg), cfg, generator=g)


def write_samples(path, it, tokenizer, table, prompts, responses, outcomes, step_term, alpha, group, k=3):
    """A few responses of this iteration, step by step, with each step's A^mu and reward."""
    rewards_per_step = step_rewards(outcomes, step_term, group, alpha)                  # (N, H)
    with open(path, "a") as f:
        for i in range(min(k, len(responses))):
            f.write(f"--- iteration {it} | response {i} | Rex {outcomes[i]:.0f}\n{tokenizer.decode(prompts[i])}")
            cuts = pav.step_cuts(responses[i], table)
            for h in range(len(cuts) - 1):
                text = tokenizer.decode(responses[i][cuts[h]:cuts[h + 1]]).replace("\n", "\\n")
                f.write(f"\n  step {h + 1}: {text!r:<14} A {step_term[i, h]:+.3f}  reward {rewards_per_step[i, h]:+.3f}")
            f.write("\n")


def policy_step(model, base, opt, scorer, problems, task, tokenizer, cfg, alpha, seed, it):
    """One iteration: `group` responses per problem, their per-step rewards, one gradient step. Returns the
    diagnostics and the batch (for `write_samples`)."""
    device = next(model.parameters()).device
    ids, table = pav.special_ids(tokenizer), data.step_end_table(tokenizer, task.delimiter)
    t0 = time.time()
    encoded = [pav.prompt_ids(tokenizer, p) for p in problems]
    prompts = [x for x in encoded for _ in range(cfg.group)]             # one per response: rows of a problem adjacent
    row_problems = [p for p in problems for _ in range(cfg.group)]
    model.eval()
    r = pav.sample(model, encoded, n=cfg.group, max_new_tokens=task.max_new_tokens, temperature=cfg.temperature,
                   generator=pav.generator("rl", seed, it, device), **ids)
    y, y_mask = r.ids.cpu(), r.mask.cpu()                                 # (N, T)
    responses = [row[:L] for row, L in zip(y.tolist(), y_mask.sum(-1).tolist())]
    outcomes = torch.tensor([pav.outcome(task, tokenizer, p, resp) for p, resp in zip(row_problems, responses)])  # (N,)
    steps = step_index(y, y_mask, table)                                  # (N, T)
    n_steps = data.step_ends(y, y_mask, table).sum(-1)                    # (N,)
    if alpha > 0:
        term, valid = step_terms(scorer, row_problems, prompts, responses, cfg.reward_q, model,
                                 pav.stream_seed("rl prover", seed, it))                   # (N, H) x 2
    else:   # ORM-RL: the outcome alone
        term = torch.zeros(len(responses), int(n_steps.max()))
        valid = torch.zeros(term.shape, dtype=torch.bool)
    rewards = token_rewards(outcomes, term, steps, cfg.group, alpha)      # (N, T)
    model.train()
    mask = y_mask.to(device).float()                                      # (N, T)
    logp, ref, loss = torch.zeros(mask.shape, device=device), torch.zeros(mask.shape, device=device), 0.0
    for part in pav.micro_batches(len(prompts), cfg.micro_batch_size):   # gradients accumulate over micro-batches
        lp = response_logprobs(model, prompts[part], y[part], y_mask[part], ids["pad_id"])   # (n, T)
        with torch.no_grad():
            rf = response_logprobs(base, prompts[part], y[part], y_mask[part], ids["pad_id"]) if cfg.kl > 0 else lp.detach()
        part_loss = pg_loss(lp, rf, rewards[part].to(device), mask[part], cfg.kl) * (mask[part].sum() / mask.sum())
        part_loss.backward()
        logp[part], ref[part], loss = lp.detach(), rf, loss + part_loss.detach()
    pav.update(model, opt, None)
    r_t, n_tok = (ref - logp).detach(), mask.sum()
    a = term[valid]
    stats = {"loss": loss.item(), "reward": outcomes.mean().item(),
             "adv_mean": float(a.mean()) if len(a) else 0.0, "adv_std": float(a.std()) if len(a) > 1 else 0.0,
             "kl": float(((r_t.exp() - r_t - 1) * mask).sum() / n_tok), "entropy": float(-(logp.detach() * mask).sum() / n_tok),
             "length": float(y_mask.sum(-1).float().mean()), "steps": float(n_steps.float().mean()),
             "seconds": time.time() - t0}
    if hasattr(task, "sound"):   # arith: the share right by arithmetic, not by luck (a diagnostic; no reward reads it)
        stats["sound"] = float(np.mean([task.sound(p, pav.response_text(tokenizer, resp))
                                        for p, resp in zip(row_problems, responses)]))
    return stats, (prompts, responses, outcomes, term)


def run_settings(cfg, name, seed, gamma, alpha):
    # a finished run can be resumed to run longer; batch_rows and micro_batch_size change memory, not results
    skip = {"resume", "seeds", "gammas", "iterations", "batch_rows", "micro_batch_size"}
    return {**{k: v for k, v in dataclasses.asdict(cfg).items() if k not in skip},
            "run": name, "seed": seed, "gamma": gamma, "alpha": alpha}


def train(name, base, scorer, task, tokenizer, cfg, seed, alpha, out, gamma=None):
    """One RL run from the base policy. Returns its history; resumes from `out/<name>.pt` with --resume."""
    table = data.step_end_table(tokenizer, task.delimiter)
    model = copy.deepcopy(base).train()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    settings = run_settings(cfg, name, seed, gamma, alpha)
    ckpt = os.path.join(out, f"{name}.pt")
    history = {"curve": [], "log": []}
    start = 0
    if cfg.resume and os.path.exists(ckpt):   # (checked before any work by `check_checkpoints`)
        state = pav.load_tensors(ckpt, "rerun without --resume to start over")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        history, start = state["history"], state["iteration"]
        print(f"{name}: resuming at iteration {start} from {ckpt}")
    else:
        if cfg.resume:
            print(f"{name}: no checkpoint in {out} to resume from; starting it over")
        open(os.path.join(out, f"samples_{name}.txt"), "w").close()
    if start == 0:
        history["curve"].append({"iteration": 0, "responses": 0,
                                 "accuracy": evaluate(model, task, tokenizer, cfg, seed, 0)})
    for it in range(start + 1, cfg.iterations + 1):
        # every iteration draws from streams of its own (pav.stream_seed): a resumed run repeats exactly
        problems = task.problems(cfg.batch_size // cfg.group, pav.rng("rl problems", seed, it))
        stats, batch = policy_step(model, base, opt, scorer, problems, task, tokenizer, cfg, alpha, seed, it)
        stats.update(iteration=it, responses=it * cfg.batch_size)
        line = (f"{name} iter {it}/{cfg.iterations} | resp {stats['responses']} | reward {stats['reward']:.3f} | "
                + (f"sound {stats['sound']:.3f} | " if "sound" in stats else "") +
                f"adv {stats['adv_mean']:+.3f}±{stats['adv_std']:.3f} | kl {stats['kl']:.4f} | "
                f"ent {stats['entropy']:.3f} | len {stats['length']:.1f} | steps {stats['steps']:.1f}")
        if it % cfg.eval_every == 0 or it == cfg.iterations:
            acc = evaluate(model, task, tokenizer, cfg, seed, it)
            history["curve"].append({"iteration": it, "responses": stats["responses"], "accuracy": acc})
            line += f" | eval acc {acc:.3f}"
        if it == cfg.early_iteration:
            history["early_pass"] = pass_at_n(model, task, tokenizer, cfg, seed, it)
        history["log"].append(stats)
        tqdm.write(line)
        if it % cfg.samples_every == 0:
            write_samples(os.path.join(out, f"samples_{name}.txt"), it, tokenizer, table, *batch, alpha, cfg.group)
        if it % cfg.ckpt_every == 0 or it == cfg.iterations:
            state = {"settings": settings, "iteration": it, "model": model.state_dict(), "opt": opt.state_dict(),
                     "history": history}
            pav.write_atomic(ckpt, lambda tmp: torch.save(state, tmp))
    model.eval()
    return model, history


# --------------------------------------------------------------------------------------------------------------
# Summary: sample efficiency, final accuracy, Pass@N; JSON and PNG

def smoothed(curve):
    """Each evaluation replaced by the median of itself and up to two before it: robust to one noisy evaluation or a
    one-off dip of the policy (a mean of three would let a single bad point move the final accuracy)."""
    acc = [c["accuracy"] for c in curve]
    return [float(np.median(acc[max(0, i - 2):i + 1])) for i in range(len(acc))]


def responses_to_reach(curve, target):
    """Sampled responses at the first evaluation after the start whose smoothed accuracy reaches target, or None."""
    s = smoothed(curve)
    return next((curve[i]["responses"] for i in range(1, len(curve)) if s[i] >= target), None)


def sample_efficiency(orm, pav_, n_eval):
    """Responses ORM-RL needed to reach its final accuracy / responses PAV-RL needed to reach the same accuracy.

    The final accuracy is the smoothed last evaluation. If ORM-RL made no measurable progress (final below start + 2
    binomial standard errors), the target is that smallest measurable progress. ORM-RL's count is its first evaluation
    at that target (a passing rise counts), or its whole run if it never got there: then the ratio is a lower bound."""
    start = orm[0]["accuracy"]
    se = math.sqrt(max(start * (1 - start), 1 / n_eval) / n_eval)
    target = max(smoothed(orm)[-1], start + 2 * se)
    n_orm, n_pav = responses_to_reach(orm, target), responses_to_reach(pav_, target)
    lower_bound = n_orm is None
    n_orm = orm[-1]["responses"] if lower_bound else n_orm
    return {"ratio": n_orm / n_pav if n_pav else None, "lower_bound": lower_bound, "target": target,
            "responses_orm": n_orm, "responses_pav": n_pav}


def mean_efficiency(eff):
    """The mean ratio over the seeds where PAV-RL reached the target (None where none did), how many seeds have no
    ratio (PAV-RL never got there), and whether the mean includes a lower bound (ORM-RL never got there)."""
    ratios = [e["ratio"] for e in eff if e["ratio"] is not None]
    return {"mean": float(np.mean(ratios)) if ratios else None, "undefined": len(eff) - len(ratios),
            "lower_bound": any(e["lower_bound"] for e in eff if e["ratio"] is not None)}


def accuracy_text(a):
    """Three decimals, or four below 0.01: a stalled run's target, its start plus two standard errors, can be 0.0005."""
    return f"{a:.3f}" if a >= 0.01 else f"{a:.4f}"


def plot(results, path, early=False):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    colors = {"start": "0.5", "orm": "C0", "pav": "C1"}
    for run, style in (("orm", "o-"), ("pav", "s-")):
        curves = [r[run]["curve"] for r in results["seeds"].values()]
        x = [c["responses"] for c in curves[0]]
        y = np.array([[c["accuracy"] for c in cu] for cu in curves])
        a.plot(x, y.mean(0), style, ms=3, color=colors[run],
               label={"orm": "ORM-RL (outcome only)", "pav": "PAV-RL (effective reward)"}[run])
        if len(curves) > 1:
            a.fill_between(x, y.min(0), y.max(0), color=colors[run], alpha=0.2)
    a.set_xlabel("sampled responses")
    a.set_ylabel("held-out accuracy")
    a.set_title(f"{results['task']}: accuracy during RL (cf. Fig. 7b)")
    a.legend()
    key = "early_pass" if early else "pass"
    for run, label in (("start", "start policy"), ("orm", "ORM-RL"), ("pav", "PAV-RL")):
        p = results[key][run]
        b.plot(p["n"], p["pass"], "o-", ms=3, color=colors[run], label=label)
    b.set_xscale("log", base=2)
    b.set_xlabel("N")
    b.set_ylabel("Pass@N")
    b.set_title("Pass@N" + (f" at iteration {results['early_iteration']} (cf. Fig. 3c)" if early else " (cf. Fig. 8a)"))
    b.legend()
    fig.tight_layout()
    pav.save_png(fig, path)
    plt.close(fig)


def plot_sweep(sweep, orm_mean, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot([s["gamma"] for s in sweep], [s["mean_accuracy"] for s in sweep], "o-", color="C1", label="PAV-RL")
    ax.axhline(orm_mean, color="C0", ls="--", label="ORM-RL")
    ax.legend()
    ax.set_xlabel(r"prover strength $\gamma$")
    ax.set_ylabel("accuracy averaged over the run")
    ax.set_title("Prover-strength sweep (cf. Fig. 3b)")
    fig.tight_layout()
    pav.save_png(fig, path)
    plt.close(fig)


# --------------------------------------------------------------------------------------------------------------

def planned_runs(cfg, seeds, gammas):
    """Every RL run of the command, as (name, seed, gamma, alpha): per seed, ORM-RL (which does not depend on the
    prover, so one run serves every gamma of a sweep) and PAV-RL with each prover."""
    sweep = len(gammas) > 1
    return [(f"orm_seed{s}", s, None, 0.0) for s in seeds] + [
        (f"pav{f'_gamma{g:g}' if sweep else ''}_seed{s}", s, g, cfg.alpha) for s in seeds for g in gammas]


def check_checkpoints(cfg, runs, out_of):
    """--resume: every checkpoint there is must load and come from these settings; checked in seconds, before any
    policy is built. A run without a checkpoint starts over."""
    for name, seed, gamma, alpha in runs:
        ckpt = os.path.join(out_of(seed), f"{name}.pt")
        if cfg.resume and os.path.exists(ckpt):
            state = pav.load_tensors(ckpt, "rerun without --resume to start over")
            if state.get("settings") != run_settings(dataclasses.replace(cfg, seed=seed), name, seed, gamma, alpha):
                pav.fail(f"the checkpoint {ckpt} was made with other settings; rerun without --resume to start over")


def main(argv=None):
    cfg = pav.parse_config(RLConfig, argv)
    seeds, gammas = check(cfg)
    device, dtype = pav.pick_device()
    tag = ("_reward-q" if cfg.reward_q else "") + ("_mc" if cfg.advantages == "mc" else "") + \
        ("_sweep" if len(gammas) > 1 else "") + (f"_prover-{os.path.basename(cfg.prover)}" if cfg.prover != "bo4" else "")
    task = pav.make_task(cfg)
    gammas = gammas if task.name == "planted" and cfg.advantages != "mc" else [None]   # the gamma-prover is planted's
    runs = planned_runs(cfg, seeds, gammas)
    out_of = lambda seed: os.path.join(pav.seed_dir(dataclasses.replace(cfg, seed=seed)), "rl" + tag)
    check_checkpoints(cfg, runs, out_of)
    print(f"device {device} | dtype {dtype} | task {cfg.task} | seeds {seeds} | alpha {cfg.alpha} | out {cfg.out}")
    results = {"task": cfg.task, "config": dataclasses.asdict(cfg), "seeds": {}, "early_iteration": cfg.early_iteration}
    for seed in seeds:   # each seed draws the whole pipeline anew: base policy, labels, verifier and RL
        scfg = dataclasses.replace(cfg, seed=seed)
        base, tokenizer = pav.load_or_build_policy(task, scfg, device)
        if cfg.model:
            pav.memory_estimate(base, task, tokenizer, scfg, device, cfg.batch_size)
        if cfg.advantages == "mc":   # A^mu of mu = BoK(pi) from fresh rollouts of the policy being trained
            scorers = {None: MonteCarloProver(task, tokenizer, scfg, pav.prover_k(cfg), cfg.rl_mc)}
        elif task.name == "planted":
            scorers = {g: GammaProver(task, g, cfg.toy_mc) for g in gammas}
        else:   # the PAV needs Q^pi (and a policy prover's Q^mu), not the ORM
            verifiers, _ = pav.load_or_train_verifiers(base, task, tokenizer, scfg, device,
                                                       names=["pqm"] + ([] if pav.prover_k(cfg) else ["q_mu"]))
            scorers = {None: LearnedPAV(pav.make_pav(verifiers, tokenizer, task, scfg))}
        os.makedirs(out_of(seed), exist_ok=True)
        trained, models = {}, {}
        for name, _, gamma, alpha in (r for r in runs if r[1] == seed):   # ORM-RL (gamma None) reads no scorer
            t0 = time.time()
            models[name], trained[name] = train(name, base, scorers.get(gamma), task, tokenizer, scfg, seed, alpha,
                                                out_of(seed), gamma)
            print(f"{name}: {time.time() - t0:.0f}s")
        key = lambda name: name.rsplit("_seed", 1)[0]                     # orm, pav, pav_gamma10, ...
        result = {key(n): h for n, h in trained.items()}
        pav_run = next(n for n in trained if n.startswith("pav"))         # with several gammas, the first one's
        result["pav"] = trained[pav_run]
        result["pass"] = {"start": pass_at_n(base, task, tokenizer, scfg, seed, 0),
                          "orm": pass_at_n(models[f"orm_seed{seed}"], task, tokenizer, scfg, seed, cfg.iterations),
                          "pav": pass_at_n(models[pav_run], task, tokenizer, scfg, seed, cfg.iterations)}
        results["seeds"][seed] = result
    summarize(results, cfg, seeds, gammas, task, tag)


def summarize(results, cfg, seeds, gammas, task, tag):
    """Sample efficiency, final accuracy and Pass@N over the seeds: printed, saved as JSON and plotted."""
    per_seed = list(results["seeds"].values())
    n_eval = len(pav.eval_problems(task, cfg))
    eff = [sample_efficiency(r["orm"]["curve"], r["pav"]["curve"], n_eval) for r in per_seed]
    final = {run: [smoothed(r[run]["curve"])[-1] for r in per_seed] for run in ("orm", "pav")}
    mean = mean_efficiency(eff)
    results["sample_efficiency"] = mean["mean"]                            # null if PAV-RL never got there
    results["sample_efficiency_undefined"] = mean["undefined"]             # seeds without a ratio
    results["sample_efficiency_lower_bound"] = mean["lower_bound"]         # the mean includes ">=" ratios
    results["sample_efficiency_per_seed"] = eff
    results["final_accuracy"] = {k: float(np.mean(v)) for k, v in final.items()}
    results["final_accuracy_spread"] = {k: [float(min(v)), float(max(v))] for k, v in final.items()}
    results["final_gap"] = results["final_accuracy"]["pav"] - results["final_accuracy"]["orm"]
    results["responses_to_90pct"] = {run: [responses_to_reach(r[run]["curve"], 0.9) for r in per_seed]
                                     for run in ("orm", "pav")}
    # Pass@N (Fig. 8a), and at an early iteration (Fig. 3c), averaged over the seeds
    average = lambda ps: {"n": ps[0]["n"], "pass": [float(np.mean(v)) for v in zip(*(p["pass"] for p in ps))]}
    results["pass"] = {run: average([r["pass"][run] for r in per_seed]) for run in ("start", "orm", "pav")}
    if 0 < cfg.early_iteration <= cfg.iterations:
        results["early_pass"] = {"start": results["pass"]["start"],
                                 **{run: average([r[run]["early_pass"] for r in per_seed]) for run in ("orm", "pav")}}
    if len(gammas) > 1:
        run_mean = lambda curve: np.mean([c["accuracy"] for c in curve])
        results["sweep"] = [{"gamma": g, "mean_accuracy": float(np.mean([run_mean(r[f"pav_gamma{g:g}"]["curve"])
                                                                         for r in per_seed]))} for g in gammas]
        results["sweep_orm_mean_accuracy"] = float(np.mean([run_mean(r["orm"]["curve"]) for r in per_seed]))
        plot_sweep(results["sweep"], results["sweep_orm_mean_accuracy"], os.path.join(cfg.out, f"rl{tag}_gammas.png"))
    print(f"\nfinal held-out accuracy (mean over seeds {seeds}; min..max): " + ", ".join(
        f"{k} {results['final_accuracy'][k]:.3f} ({results['final_accuracy_spread'][k][0]:.3f}.."
        f"{results['final_accuracy_spread'][k][1]:.3f})" for k in ("orm", "pav")) + f" | gap {results['final_gap']:+.3f}")
    print("sample efficiency (ORM-RL's responses to reach its final accuracy / PAV-RL's): " + ", ".join(
        (f"seed {s}: none, PAV-RL never reached {accuracy_text(e['target'])}" if e["ratio"] is None else
         f"seed {s}: {'>=' if e['lower_bound'] else ''}{e['ratio']:.1f}x ({e['responses_orm']} vs {e['responses_pav']} "
         f"to reach {accuracy_text(e['target'])})") for s, e in zip(seeds, eff)) + " | mean " +
        ("none" if mean["mean"] is None else f"{'>=' if mean['lower_bound'] else ''}{mean['mean']:.1f}x") +
        (f" over the {len(eff) - mean['undefined']} seeds with a ratio" if mean["undefined"] else ""))
    print(f"responses to reach 90% accuracy: {results['responses_to_90pct']}")
    for key in ("pass", "early_pass"):
        if key in results:
            print(("Pass@N" if key == "pass" else f"Pass@N at iteration {cfg.early_iteration}") +
                  f" (mean over seeds)  N: " + " ".join(f"{n:>5}" for n in results[key]["start"]["n"]))
            for run in ("start", "orm", "pav"):
                print(f"  {run:>5}: " + " ".join(f"{p:5.3f}" for p in results[key][run]["pass"]))
    if "sweep" in results:
        print("gamma sweep (accuracy averaged over the run): " + ", ".join(
            f"gamma {s['gamma']:g}: {s['mean_accuracy']:.3f}" for s in results["sweep"]) +
            f" | ORM-RL {results['sweep_orm_mean_accuracy']:.3f}")
    path = os.path.join(cfg.out, f"rl{tag}.json")
    pav.save_json(results, path)
    plot(results, os.path.join(cfg.out, f"rl{tag}.png"))
    if "early_pass" in results:
        plot(results, os.path.join(cfg.out, f"rl{tag}_early.png"), early=True)
    print(f"saved {path} and {os.path.join(cfg.out, f'rl{tag}.png')}")


if __name__ == "__main__":
    main()
