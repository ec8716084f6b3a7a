"""Online RL with process advantage verifiers (section 5): REINFORCE on the dense effective reward (PAV-RL) against the
outcome reward alone (ORM-RL), from the same base policy, with the same budget of samples.

    python rl.py                            # CPU: the default task, from nothing cached in about 15 minutes
    python rl.py --seeds 0,1,2              # three full pipelines (policy, labels, verifier, RL): mean and spread
    python rl.py --task arith               # the lesson: where outcome-only RL learns fast, dense rewards add little
    python rl.py --task planted             # the paper's toy (section 3.3), with the gamma = 10 prover
    python rl.py --task planted --gammas 1,5,9,13,17,30   # the prover-strength sweep (Fig. 3b)
    python rl.py --control mu-pi            # section 3.2: mu = pi, advantages of the policy being trained
    python rl.py --control reward-q         # appendix G: reward Q^mu instead of A^mu
    python rl.py --resume                   # go on from the checkpoints of an interrupted run
    python rl.py --model DIR --data train.jsonl --eval-data test.jsonl   # your causal LM on one GPU

For each seed: load or build the base policy pi and the PQM (pav.py), train ORM-RL (alpha = 0, Eq. 3) and PAV-RL (Eq.
5's effective reward on every step), evaluating both on held-out problems as they go; then print and save
(runs/<task>/rl.json, rl.png) accuracy against sampled responses (Fig. 7b), the sample efficiency ratio, the final
accuracy gap and Pass@N (Fig. 8a), and on planted Pass@N early on (Fig. 3c).

Differences from the paper:
1. Eq. 5 writes Q^pi(s_h, a_h) for step h; we estimate it, for every step of a response, by the response's own outcome
   Rex(y) (one Monte Carlo rollout, the estimate outcome RL uses), minus the mean outcome of the other responses to the
   same problem (a leave-one-out baseline) instead of a learned value function as the paper's baseline.
2. alpha * A^mu enters as it is, with no baseline, as in Eq. 5. A^mu has mean zero under mu, not under pi, which samples
   the steps: for mu = BoK(pi), E_{a~pi}[A^mu(s, a)] <= 0 (Q^mu = 1 - (1 - Q^pi)^K is concave in Q^pi; Q^pi 0.5 or 0.1
   with equal odds and K = 4 give -0.12). A baseline that depends on the state alone would change the gradient's
   variance, not its expectation, so leaving it out is unbiased, only possibly noisier.
3. The KL penalty to the start policy (coefficient 0.001, the paper's) is the k3 estimator exp(r) - r - 1 with
   r = log pi_ref - log pi on the sampled tokens, added to the loss.
4. One on-policy gradient step per batch (no clipping or importance ratios), Adam, a constant learning rate.
5. On planted the advantage comes from 128 rollouts of the gamma-prover per prefix (the paper's '>100'), and the policy
   is a tiny Llama warm-started on gamma = 3 demonstrations, not a MADE MLP on gamma = 5 ones (data.Planted).
"""

import copy
import dataclasses
import math
import os
import time
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from tqdm import tqdm

import data
import pav
from pav import arg

# --------------------------------------------------------------------------------------------------------------
# Settings. Each task's own defaults, in one place: the flags' defaults, then what has no flag.

TASK_DEFAULTS = {
    # alpha as in the paper (planted: alpha 1; RL on MATH: alpha 3-5); Adam's lr: planted's 1e-3 is the paper's, the
    # arithmetic tasks' 3e-4 is ours (1e-3 was unstable there, docs/experiments.md)
    "facts": dict(alpha=3.0, lr=3e-4, iterations=80, batch_size=64),
    "arith": dict(alpha=3.0, lr=3e-4, iterations=80, batch_size=64),
    # 600 iterations: room for ORM-RL's first lucky success, which sets the ratio (README: the toy's row)
    "planted": dict(alpha=1.0, lr=1e-3, iterations=600, batch_size=64),
}
EVAL_EVERY = {"planted": 10}                # iterations between evaluations (others: 4)
EARLY_ITERATION = {"planted": 100}          # Pass@N is also measured here (Fig. 3c)
GROUP = 4                                   # responses per problem; the leave-one-out baseline is the other three's
KL = 0.001                                  # the paper's weight of the KL penalty to the start policy
TOY_MC = 128                                # planted: prover rollouts per prefix for Q^mu (the paper: '>100')
MU_PI_MC = 8                                # --control mu-pi: rollouts of the current policy per prefix (unbiased;
                                            # 32 would cost 4x, about 40 min a run on 2 cores)
PASS_N, PASS_PROBLEMS = 64, 128             # Pass@N up to N = 64 on 128 held-out problems
CKPT_EVERY, SAMPLES_EVERY = 10, 20          # iterations between checkpoints, and between sampled responses written


@dataclass
class RLConfig(pav.Config):
    task_defaults: ClassVar[dict] = TASK_DEFAULTS
    seed: int = arg(0, None)                 # rl.py takes --seeds
    alpha: float = arg(3.0, "weight of A^mu in the effective reward Rex + alpha * A^mu (Eq. 5)", "non-negative")
    seeds: str = arg("0", "pipeline seeds: each draws the base policy, labels, verifier and RL runs anew")
    iterations: int = arg(80, "policy-gradient iterations of each run", "positive")
    batch_size: int = arg(64, f"sampled responses per iteration, {GROUP} per problem (the same for both runs)",
                          "positive")
    lr: float = arg(3e-4, "Adam learning rate of the policy", "positive")
    gammas: str = arg("10", "planted: strength of the gamma-prover mu; several (1,5,9,13,17,30) run the sweep of "
                            "Fig. 3b")
    control: str = arg("", "mu-pi: A^pi of the policy being trained, from fresh rollouts (section 3.2: in expectation "
                           "1 + alpha times outcome RL's gradient, no new direction); reward-q: reward Q^mu instead of "
                           "A^mu (appendix G)")
    resume: bool = arg(False, "go on from each run's last checkpoint; a run without one starts over")


# --------------------------------------------------------------------------------------------------------------
# The method: per-step rewards on tokens, the leave-one-out baseline, the policy-gradient loss

def loo_baseline(outcomes, group):
    """b_i = mean of Rex over the other responses of the same problem (rows of a problem are adjacent). (N,) -> (N,)"""
    g = outcomes.view(-1, group)                                          # (N / group, group)
    return ((g.sum(1, keepdim=True) - g) / (group - 1)).view(-1)          # (N,)


def step_rewards(outcomes, step_term, group, alpha):
    """The reward of every step: outcomes (N,) Rex(y); step_term (N, H) A^mu(s_h, a_h) of each step (Q^mu for the
    appendix-G control). Returns (N, H)."""
    # Eq. 5: step h's reward is Q^pi(s_h, a_h) + alpha * A^mu(s_h, a_h); Q^pi(s_h, a_h) is estimated by the outcome
    # Rex(y), from which the leave-one-out baseline is subtracted
    return (outcomes - loo_baseline(outcomes, group))[:, None] + alpha * step_term     # (N, H)


def token_rewards(step_rewards, step_end, mask):
    """The reward of every response token: that of the step it belongs to, the delimiter that ends a step being part of
    it; padding gets 0. step_rewards (N, H); step_end (N, T) True at the last token of every step (`data.step_ends`);
    mask (N, T) True on real tokens. Returns (N, T). (Exercise 4 asks for this function.)"""
    ends = step_end.long()                                                # (N, T)
    step = (ends.cumsum(-1) - ends).clamp(max=step_rewards.shape[1] - 1)  # (N, T): steps ended before token t
    return step_rewards.gather(1, step) * mask                            # (N, T)


def pg_loss(logp, ref_logp, rewards, mask, kl_coef):
    """REINFORCE with a KL penalty, averaged over the response tokens of the batch:

        loss = mean_t [ -log pi(y_t | x, y_<t) * reward_t  +  kl_coef * (exp(r_t) - r_t - 1) ],  r_t = ref_t - logp_t

    logp (N, T) carries the gradient; ref_logp (N, T) comes from the frozen start policy; rewards (N, T) are constants.
    The k3 term is an unbiased, non-negative estimate of KL(pi || pi_ref) from samples of pi; differentiated as a loss
    (as GRPO does), its gradient at a token is that of KL(pi_ref || pi), which agrees with KL(pi || pi_ref) to first
    order near pi_ref (tests/test_rl.py checks both on a three-way softmax).
    """
    r = ref_logp - logp                                                   # (N, T)
    per_token = -logp * rewards.detach() + kl_coef * (r.exp() - r - 1)    # (N, T)
    return (per_token * mask).sum() / mask.sum().clamp(min=1)


# --------------------------------------------------------------------------------------------------------------
# Where A^mu comes from: the learned PAV (pav.PAV, from the trained PQM); planted's gamma-prover; the policy itself (the
# mu = pi control). Each scores (prompts, responses) as pav.PAV.score does, given what else it needs as keywords.

class GammaProver:
    """planted: Q^mu of the gamma-prover (section 3.3) from `n` prover rollouts per prefix, as the paper's toy does."""

    def __init__(self, task, gamma, n):
        self.task, self.gamma, self.n = task, gamma, n

    def score(self, prompts, responses, seed, **_):
        prefixes = [y[:h] for y in responses for h in range(len(y) + 1)]
        g = torch.Generator().manual_seed(seed)
        # Eq. 1 by Monte Carlo: the fraction of n prover completions of each prefix that succeed
        wins = self.task.prover_complete(prefixes, self.gamma, self.n, g).view(-1, self.n).mean(1)   # (prefixes,)
        return values(wins, [len(y) + 1 for y in responses])


class PolicyProver:
    """The mu = pi control (section 3.2): Q^pi of every prefix from `n` fresh rollouts of the policy being trained, at
    every iteration. In expectation sum_h grad log pi(a_h|s_h) A^pi(s_h, a_h) is outcome RL's gradient itself (the policy
    gradient theorem), so the effective reward scales that gradient by 1 + alpha and adds no new direction: the
    paper's point that mu = pi gives no gain beyond a larger step. That holds in expectation; the Monte Carlo A^pi is
    also a per-step critic, less noisy than one outcome, and on `facts` it helped (README). Slow: n rollouts a prefix."""

    def __init__(self, task, tokenizer, cfg, n):
        self.task, self.tokenizer, self.cfg, self.n = task, tokenizer, cfg, n
        self.table = data.step_end_table(tokenizer, task.delimiter)

    def score(self, prompts, responses, problems, policy, seed):
        cuts = [pav.step_cuts(y, self.table) for y in responses]
        prefixes = [(i, y[:c]) for i, (y, cs) in enumerate(zip(responses, cuts)) for c in cs]
        g = torch.Generator(next(policy.parameters()).device).manual_seed(seed)
        counts = pav.mc_successes(policy, self.task, self.tokenizer, problems, prefixes, self.n, self.cfg, g)
        return values(counts / self.n, [len(cs) for cs in cuts])


def values(q, lengths):
    """Flat prefix values q (sum of lengths,) -> what pav.PAV.score returns, with mu's values as both Q^pi and Q^mu:
    q (N, H+1), q, A^mu (N, H), and their masks."""
    m = torch.arange(max(lengths))[None, :] < torch.tensor(lengths)[:, None]   # (N, H+1)
    v = torch.zeros(m.shape)
    v[m] = q.float()
    return v, v, pav.advantages(v) * m[:, 1:], m, m[:, 1:]


# --------------------------------------------------------------------------------------------------------------
# One iteration: sample, reward, one gradient step. One run: iterations, evaluations, checkpoints

def policy_step(model, base, opt, scorer, problems, task, tokenizer, cfg, alpha, seed, it):
    """`GROUP` responses per problem, their per-step rewards, one gradient step: the diagnostics and the batch."""
    device = next(model.parameters()).device
    ids, table = data.special_ids(tokenizer), data.step_end_table(tokenizer, task.delimiter)
    t0 = time.time()
    encoded = [data.prompt_ids(tokenizer, p) for p in problems]
    prompts = [x for x in encoded for _ in range(GROUP)]                 # one per response: rows of a problem adjacent
    row_problems = [p for p in problems for _ in range(GROUP)]
    model.eval()
    r = pav.sample(model, encoded, n=GROUP, max_new_tokens=task.max_new_tokens, temperature=pav.TEMPERATURE,
                   generator=pav.generator("rl", seed, it, device), **ids)
    y, y_mask = r.ids.cpu(), r.mask.cpu()                                 # (N, T)
    responses = [row[:L] for row, L in zip(y.tolist(), y_mask.sum(-1).tolist())]
    outcomes = torch.tensor([data.outcome(task, tokenizer, p, resp) for p, resp in zip(row_problems, responses)])  # (N,)
    ends = data.step_ends(y, y_mask, table)                               # (N, T): each step's last token
    n_steps = ends.sum(-1)                                                # (N,)
    term = torch.zeros(len(responses), int(n_steps.max()))                # (N, H): ORM-RL, the outcome alone
    valid = torch.zeros(term.shape, dtype=torch.bool)
    if alpha > 0:
        q_pi, q_mu, a_mu, m, valid = scorer.score(prompts, responses, problems=row_problems, policy=model,
                                                  seed=pav.stream_seed("rl prover", seed, it))
        term = q_mu[:, 1:] * valid if cfg.control == "reward-q" else a_mu                    # (N, H)
    rewards = token_rewards(step_rewards(outcomes, term, GROUP, alpha), ends, y_mask)   # (N, T)
    model.train()
    mask = y_mask.to(device).float()                                      # (N, T)
    logp, ref = torch.zeros(mask.shape, device=device), torch.zeros(mask.shape, device=device)
    for part in pav.micro_batches(len(prompts), cfg.micro_batch_size):   # gradients accumulate over micro-batches
        lp = response_logprobs(model, prompts[part], y[part], y_mask[part], ids["pad_id"])       # (n, T)
        with torch.no_grad():
            rf = response_logprobs(base, prompts[part], y[part], y_mask[part], ids["pad_id"])    # (n, T)
        loss = pg_loss(lp, rf, rewards[part].to(device), mask[part], KL) * (mask[part].sum() / mask.sum())
        loss.backward()
        logp[part], ref[part] = lp.detach(), rf
    pav.update(model, opt, None)
    r_t, n_tok, a = ref - logp, mask.sum(), term[valid]
    stats = {"reward": outcomes.mean().item(), "adv_mean": float(a.mean()) if len(a) else 0.0,
             "adv_std": float(a.std()) if len(a) > 1 else 0.0, "kl": float(((r_t.exp() - r_t - 1) * mask).sum() / n_tok),
             "entropy": float(-(logp * mask).sum() / n_tok), "length": float(y_mask.sum(-1).float().mean()),
             "steps": float(n_steps.float().mean()), "seconds": time.time() - t0}
    if hasattr(task, "sound"):   # arithmetic: the share with every line right, which a lucky answer is not
        stats["sound"] = float(np.mean([task.sound(p, data.response_text(tokenizer, resp))
                                        for p, resp in zip(row_problems, responses)]))
    return stats, (prompts, responses, outcomes, term)


def response_logprobs(model, prompts, ids, mask, pad_id):
    """log pi(y_t | x, y_<t) of each response token (ids, mask: (N, T)), one teacher-forced pass: (N, T). The prompts
    are left-padded so that every response starts at the same column."""
    device = next(model.parameters()).device
    p_ids, p_mask = (t.to(device) for t in pav.pad_rows(prompts, pad_id, left=True))   # (N, P)
    P = p_ids.shape[1]
    x = torch.cat([p_ids, ids.to(device)], 1)                             # (N, P + T)
    attn = torch.cat([p_mask, mask.to(device).long()], 1)                 # (N, P + T)
    with pav.autocast(device):
        logits = model(input_ids=x, attention_mask=attn, position_ids=(attn.cumsum(-1) - 1).clamp(min=0)).logits
    logits = logits[:, P - 1:-1].float()                                  # (N, T, V): position P-1+t predicts y_t
    logp = torch.log_softmax(logits, -1).gather(-1, ids.to(device)[..., None]).squeeze(-1)   # (N, T)
    return logp * mask.to(device)


def train(name, base, scorer, task, tokenizer, cfg, seed, alpha, out, gamma=None):
    """One RL run from the base policy: (the trained model, its history). With --resume it goes on from `out/<name>.pt`;
    every iteration draws from random streams of its own (pav.stream_seed), so a resumed run repeats exactly."""
    table = data.step_end_table(tokenizer, task.delimiter)
    model = copy.deepcopy(base).train()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    ckpt, samples = os.path.join(out, f"{name}.pt"), os.path.join(out, f"samples_{name}.txt")
    history, start = {"curve": [], "log": []}, 0
    if cfg.resume and os.path.exists(ckpt):   # its settings were checked before any work (check_checkpoints)
        state = pav.load_tensors(ckpt, "rerun without --resume to start over")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        history, start = state["history"], state["iteration"]
        print(f"{name}: resuming at iteration {start} from {ckpt}")
    else:
        if cfg.resume:
            print(f"{name}: no checkpoint in {out} to resume from; starting it over")
        open(samples, "w").close()
    every = EVAL_EVERY.get(task.name, 4)
    if start == 0:
        history["curve"].append({"iteration": 0, "responses": 0, "accuracy": evaluate(model, task, tokenizer, cfg, seed, 0)})
    for it in range(start + 1, cfg.iterations + 1):
        problems = task.problems(cfg.batch_size // GROUP, pav.rng("rl problems", seed, it))
        stats, batch = policy_step(model, base, opt, scorer, problems, task, tokenizer, cfg, alpha, seed, it)
        stats.update(iteration=it, responses=it * cfg.batch_size)
        line = (f"{name} iter {it}/{cfg.iterations} | resp {stats['responses']} | reward {stats['reward']:.3f} | "
                + (f"sound {stats['sound']:.3f} | " if "sound" in stats else "") +
                f"adv {stats['adv_mean']:+.3f}±{stats['adv_std']:.3f} | kl {stats['kl']:.4f} | "
                f"ent {stats['entropy']:.3f} | len {stats['length']:.1f} | steps {stats['steps']:.1f}")
        if it % every == 0 or it == cfg.iterations:
            acc = evaluate(model, task, tokenizer, cfg, seed, it)
            history["curve"].append({"iteration": it, "responses": stats["responses"], "accuracy": acc})
            line += f" | eval acc {acc:.3f}"
        if it == EARLY_ITERATION.get(task.name):
            history["early_pass"] = pass_at_n(model, task, tokenizer, cfg, seed, it)
        history["log"].append(stats)
        tqdm.write(line)
        if it % SAMPLES_EVERY == 0:
            write_samples(samples, it, tokenizer, table, *batch, alpha)
        if it % CKPT_EVERY == 0 or it == cfg.iterations:
            state = {"settings": run_settings(cfg, name, seed, gamma, alpha), "iteration": it,
                     "model": model.state_dict(), "opt": opt.state_dict(), "history": history}
            data.write_atomic(ckpt, lambda tmp: torch.save(state, tmp))
    return model.eval(), history


def run_settings(cfg, name, seed, gamma, alpha):
    """What a checkpoint must have been made with to be resumed: every setting but the run length, the other runs'
    seeds and gammas, and the memory knobs."""
    skip = {"resume", "seeds", "gammas", "iterations", "batch_rows", "micro_batch_size"}
    return {**{k: v for k, v in dataclasses.asdict(cfg).items() if k not in skip},
            "run": name, "seed": seed, "gamma": gamma, "alpha": alpha}


def evaluate(model, task, tokenizer, cfg, seed, iteration):
    g = pav.generator("rl eval", seed, iteration, next(model.parameters()).device)
    return pav.accuracy(model, task, tokenizer, pav.eval_problems(task, cfg), cfg, generator=g)


def pass_at_n(model, task, tokenizer, cfg, seed, iteration):
    """Pass@N for N = 1, 2, 4, ..., PASS_N on held-out problems, unbiased from PASS_N samples per problem."""
    g = pav.generator("pass@n", seed, iteration, next(model.parameters()).device)
    problems = pav.eval_problems(task, cfg)[:PASS_PROBLEMS]
    counts = pav.mc_successes(model, task, tokenizer, problems, [(i, []) for i in range(len(problems))], PASS_N, cfg, g)
    ns = [2 ** i for i in range(int(math.log2(PASS_N)) + 1)]
    # pass@N = 1 - C(n - c, N) / C(n, N): the Best-of-K estimator
    return {"n": ns, "pass": [float(pav.bok_unbiased(counts, PASS_N, k).mean()) for k in ns]}


def write_samples(path, it, tokenizer, table, prompts, responses, outcomes, step_term, alpha, k=3):
    """A few responses of this iteration, step by step, with each step's A^mu and reward."""
    rewards = step_rewards(outcomes, step_term, GROUP, alpha)                           # (N, H)
    with open(path, "a") as f:
        for i in range(min(k, len(responses))):
            prompt = tokenizer.decode(prompts[i]).rstrip("\n")                        # planted's is empty
            f.write(f"--- iteration {it} | response {i} | Rex {outcomes[i]:.0f}\n" + (prompt and prompt + "\n"))
            cuts = pav.step_cuts(responses[i], table)
            for h in range(len(cuts) - 1):
                text = tokenizer.decode(responses[i][cuts[h]:cuts[h + 1]])              # !r shows "\n" as \n
                f.write(f"  step {h + 1}: {text!r:<14} A {step_term[i, h]:+.3f}  reward {rewards[i, h]:+.3f}\n")


# --------------------------------------------------------------------------------------------------------------
# Summary: sample efficiency, final accuracy, Pass@N

def smoothed(curve):
    """Each evaluation replaced by the median of itself and up to two before it: robust to one noisy evaluation."""
    acc = [c["accuracy"] for c in curve]
    return [float(np.median(acc[max(0, i - 2):i + 1])) for i in range(len(acc))]


def responses_to_reach(curve, target):
    """Sampled responses at the first evaluation after the start whose smoothed accuracy reaches target, or None."""
    s = smoothed(curve)
    return next((curve[i]["responses"] for i in range(1, len(curve)) if s[i] >= target), None)


def sample_efficiency(orm, pav_, n_eval):
    """Responses ORM-RL needed to reach its final accuracy (smoothed) / responses PAV-RL needed to reach it. If ORM-RL
    ended without measurable progress (its final accuracy below start + 2 binomial standard errors), the target is
    that least measurable progress, and ORM-RL's whole run the count: a lower bound. (Where it touched that target on
    the way, a few lucky evaluations at one success in 4,096 samples did it, not learning.) None if PAV-RL never got
    there."""
    start = orm[0]["accuracy"]
    se = math.sqrt(max(start * (1 - start), 1 / n_eval) / n_eval)
    lower_bound = smoothed(orm)[-1] < start + 2 * se
    target = start + 2 * se if lower_bound else smoothed(orm)[-1]
    n_orm, n_pav = responses_to_reach(orm, target), responses_to_reach(pav_, target)
    n_orm = orm[-1]["responses"] if lower_bound else n_orm
    return {"ratio": n_orm / n_pav if n_pav else None, "lower_bound": lower_bound, "target": target,
            "responses_orm": n_orm, "responses_pav": n_pav}


def mean_efficiency(eff):
    """The mean and median ratio over the seeds where PAV-RL reached the target (None where none did), how many seeds
    have no ratio (PAV-RL never got there), and whether they include a lower bound (ORM-RL never got there)."""
    ratios = [e["ratio"] for e in eff if e["ratio"] is not None]
    return {"mean": float(np.mean(ratios)) if ratios else None, "median": float(np.median(ratios)) if ratios else None,
            "undefined": len(eff) - len(ratios),
            "lower_bound": any(e["lower_bound"] for e in eff if e["ratio"] is not None)}


def summarize(results, cfg, seeds, task):
    """Sample efficiency, final accuracy and Pass@N over the seeds, into `results` and printed."""
    per_seed = list(results["seeds"].values())
    n_eval = len(pav.eval_problems(task, cfg))
    eff = [sample_efficiency(r["orm"]["curve"], r["pav"]["curve"], n_eval) for r in per_seed]
    final = {run: [smoothed(r[run]["curve"])[-1] for r in per_seed] for run in ("orm", "pav")}
    mean = mean_efficiency(eff)
    results.update(sample_efficiency=mean["mean"],                        # null if PAV-RL never got there
                   sample_efficiency_median=mean["median"],
                   sample_efficiency_undefined=mean["undefined"],         # seeds without a ratio
                   sample_efficiency_lower_bound=mean["lower_bound"],     # the mean includes ">=" ratios
                   sample_efficiency_per_seed=eff,
                   final_accuracy={k: float(np.mean(v)) for k, v in final.items()},
                   final_accuracy_per_seed=final,
                   final_gap=float(np.mean(final["pav"]) - np.mean(final["orm"])))
    average = lambda ps: {"n": ps[0]["n"], "pass": [float(np.mean(v)) for v in zip(*(p["pass"] for p in ps))]}
    results["pass"] = {run: average([r["pass"][run] for r in per_seed]) for run in ("start", "orm", "pav")}
    if all("early_pass" in r["pav"] for r in per_seed):   # Fig. 3c
        results["early_pass"] = {"start": results["pass"]["start"],
                                 **{run: average([r[run]["early_pass"] for r in per_seed]) for run in ("orm", "pav")}}
    spread = lambda v: f"{np.mean(v):.3f} ({min(v):.3f}..{max(v):.3f})"
    print(f"\nfinal held-out accuracy (median of the last 3 evaluations; mean over seeds {seeds}; min..max): orm "
          f"{spread(final['orm'])}, "
          f"pav {spread(final['pav'])} | gap {results['final_gap']:+.3f} "
          f"(per seed {', '.join(f'{p - o:+.3f}' for o, p in zip(final['orm'], final['pav']))})")
    ratio = lambda r, lower: "none" if r is None else f"{'>=' if lower else ''}{r:.1f}x"
    per_seed_text = [f"seed {s}: {ratio(e['ratio'], e['lower_bound'])} ({e['responses_orm']} vs {e['responses_pav']} "
                     f"to reach {accuracy_text(e['target'])})" for s, e in zip(seeds, eff)]
    print("sample efficiency (ORM-RL's responses to reach its final accuracy / PAV-RL's; none: PAV-RL never did): "
          + ", ".join(per_seed_text) + f" | mean {ratio(mean['mean'], mean['lower_bound'])}"
          + (f", median {ratio(mean['median'], mean['lower_bound'])}" if len(eff) > 1 else "")
          + (f" over the {len(eff) - mean['undefined']} seeds with a ratio" if mean["undefined"] else ""))
    if all("labelling_rollouts" in r for r in per_seed):
        cost = np.mean([r["labelling_rollouts"] for r in per_seed])
        print(f"the ratio counts RL's responses only, as the paper does; the PQM's labels took {cost:,.0f} rollouts "
              f"a seed, {cost / (cfg.iterations * cfg.batch_size):.0f}x one RL run's {cfg.iterations * cfg.batch_size:,}")
    for key in ("pass", "early_pass"):
        if key in results:
            print(("Pass@N" if key == "pass" else f"Pass@N at iteration {EARLY_ITERATION[task.name]}") +
                  " (mean over seeds)  N: " + " ".join(f"{n:>5}" for n in results[key]["start"]["n"]))
            for run in ("start", "orm", "pav"):
                print(f"  {run:>5}: " + " ".join(f"{p:5.3f}" for p in results[key][run]["pass"]))


def accuracy_text(a):
    """Three decimals, or four below 0.01: a stalled run's target, its start plus two standard errors, can be 0.0005."""
    return f"{a:.3f}" if a >= 0.01 else f"{a:.4f}"


def summarize_sweep(results, gammas):
    """Fig. 3b: the accuracy averaged over each run, for each prover strength, against ORM-RL's."""
    run_mean = lambda curve: float(np.mean([c["accuracy"] for c in curve]))
    per_seed = results["seeds"].values()
    results["sweep"] = [{"gamma": g, "mean_accuracy": float(np.mean([run_mean(r[f"pav_gamma{g:g}"]["curve"])
                                                                     for r in per_seed]))} for g in gammas]
    results["sweep_orm_mean_accuracy"] = float(np.mean([run_mean(r["orm"]["curve"]) for r in per_seed]))
    print("gamma sweep (accuracy averaged over the run): " + ", ".join(
        f"gamma {s['gamma']:g}: {s['mean_accuracy']:.3f}" for s in results["sweep"]) +
        f" | ORM-RL {results['sweep_orm_mean_accuracy']:.3f}")


def plot(results, path, early=False):
    """Accuracy against sampled responses (mean over seeds, and their range) beside Pass@N; after a sweep over the
    prover's strength, the accuracy averaged over each run against it (Fig. 3b)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    sweep = "sweep" in results and not early
    fig, axes = plt.subplots(1, 3 if sweep else 2, figsize=(15 if sweep else 10, 3.8))
    a, b = axes[:2]
    colors = {"start": "0.5", "orm": "C0", "pav": "C1"}
    for run, label in (("orm", "ORM-RL (outcome only)"), ("pav", "PAV-RL (effective reward)")):
        curves = [r[run]["curve"] for r in results["seeds"].values()]
        x, y = [c["responses"] for c in curves[0]], np.array([smoothed(cu) for cu in curves])   # what the table reports
        a.plot(x, y.mean(0), "o-" if run == "orm" else "s-", ms=3, color=colors[run], label=label)
        if len(curves) > 1:
            a.fill_between(x, y.min(0), y.max(0), color=colors[run], alpha=0.2)
    a.set(xlabel="sampled responses", ylabel="held-out accuracy\n(median of the last 3 evaluations)",
          title=f"{results['task']}: RL (cf. Fig. 7b)")
    a.legend()
    key = "early_pass" if early else "pass"
    for run, label in (("start", "start policy"), ("orm", "ORM-RL"), ("pav", "PAV-RL")):
        b.plot(results[key][run]["n"], results[key][run]["pass"], "o-", ms=3, color=colors[run], label=label)
    b.set_xscale("log", base=2)
    b.set(xlabel="N", ylabel="Pass@N", title="Pass@N" + (" early (cf. Fig. 3c)" if early else " (cf. Fig. 8a)"))
    b.legend()
    if sweep:
        c = axes[2]
        c.plot([s["gamma"] for s in results["sweep"]], [s["mean_accuracy"] for s in results["sweep"]], "o-",
               color="C1", label="PAV-RL")
        c.axhline(results["sweep_orm_mean_accuracy"], color="C0", ls="--", label="ORM-RL")
        c.set(xlabel=r"prover strength $\gamma$", ylabel="accuracy averaged over the run", title="(cf. Fig. 3b)")
        c.legend()
    fig.tight_layout()
    data.save_png(fig, path)
    plt.close(fig)


# --------------------------------------------------------------------------------------------------------------

def planned_runs(cfg, seeds, gammas):
    """Every RL run of the command, as (name, seed, gamma, alpha): per seed, ORM-RL (which reads no prover, so one run
    serves every gamma of a sweep) and PAV-RL with each prover (gamma None: the task's PAV)."""
    sweep = len(gammas) > 1
    return [(f"orm_seed{s}", s, None, 0.0) for s in seeds] + [
        (f"pav{f'_gamma{g:g}' if sweep else ''}_seed{s}", s, g, cfg.alpha) for s in seeds for g in gammas]


def check_checkpoints(cfg, runs, out_of):
    """--resume: every checkpoint there is must load and come from these settings; checked in seconds, before any
    policy is built."""
    for name, seed, gamma, alpha in runs:
        ckpt = os.path.join(out_of(seed), f"{name}.pt")
        if cfg.resume and os.path.exists(ckpt):
            state = pav.load_tensors(ckpt, "rerun without --resume to start over")
            if state.get("settings") != run_settings(dataclasses.replace(cfg, seed=seed), name, seed, gamma, alpha):
                pav.fail(f"the checkpoint {ckpt} was made with other settings; rerun without --resume to start over")


def main(argv=None):
    cfg = pav.parse_config(RLConfig, argv)
    pav.check_config(cfg)                  # nonsense is refused here, before any work
    seeds = pav.number_list(cfg.seeds, "seeds", positive=False)
    gammas = pav.number_list(cfg.gammas, "gammas", float)
    if cfg.batch_size % GROUP:
        pav.fail(f"--batch-size {cfg.batch_size} must be a multiple of {GROUP}, the responses per problem")
    if cfg.control not in ("", "mu-pi", "reward-q"):
        pav.fail(f"--control must be mu-pi or reward-q, got {cfg.control!r}")
    if len(gammas) > 1 and cfg.task != "planted":
        pav.fail("--gammas is planted's prover; the other tasks' prover is --prover")
    device, dtype = pav.pick_device()
    task = pav.make_task(cfg)
    gammas = gammas if task.name == "planted" and cfg.control != "mu-pi" else [None]
    tag = f"_{cfg.control}" if cfg.control else "_sweep" if len(gammas) > 1 else ""
    runs = planned_runs(cfg, seeds, gammas)
    out_of = lambda seed: os.path.join(pav.seed_dir(dataclasses.replace(cfg, seed=seed)), "rl" + tag)
    check_checkpoints(cfg, runs, out_of)
    print(f"device {device} | dtype {dtype} | task {cfg.task} | seeds {seeds} | alpha {cfg.alpha} | lr {cfg.lr} | "
          f"out {cfg.out}")
    results = {"task": cfg.task, "config": dataclasses.asdict(cfg), "seeds": {}}
    for seed in seeds:   # each seed draws the whole pipeline anew: base policy, labels, verifier and RL
        scfg = dataclasses.replace(cfg, seed=seed)
        base, tokenizer = pav.load_or_build_policy(task, scfg, device)
        if cfg.control == "mu-pi":
            scorers = {None: PolicyProver(task, tokenizer, scfg, MU_PI_MC)}
        elif task.name == "planted":
            scorers = {g: GammaProver(task, g, TOY_MC) for g in gammas}
        else:
            verifiers = pav.load_or_train_verifiers(base, task, tokenizer, scfg, device, names=("pqm",))
            scorers = {None: pav.make_pav(verifiers, tokenizer, task, scfg)}
        os.makedirs(out_of(seed), exist_ok=True)
        trained, models = {}, {}
        for name, _, gamma, alpha in (r for r in runs if r[1] == seed):   # ORM-RL (alpha 0) reads no scorer
            t0 = time.time()
            models[name], trained[name] = train(name, base, scorers.get(gamma), task, tokenizer, scfg, seed, alpha,
                                                out_of(seed), gamma)
            print(f"{name}: {time.time() - t0:.0f}s")
        result = {name.rsplit("_seed", 1)[0]: h for name, h in trained.items()}   # orm, pav, pav_gamma10, ...
        first_pav = next(n for n in trained if n.startswith("pav"))               # with several gammas, the first
        result["pav"] = trained[first_pav]
        result["pass"] = {"start": pass_at_n(base, task, tokenizer, scfg, seed, 0),
                          "orm": pass_at_n(models[f"orm_seed{seed}"], task, tokenizer, scfg, seed, cfg.iterations),
                          "pav": pass_at_n(models[first_pav], task, tokenizer, scfg, seed, cfg.iterations)}
        if task.name != "planted" and cfg.control != "mu-pi":   # what the verifiers' backbone knew before any label
            result["verifier"] = data.read_json(os.path.join(pav.verifier_dir(task, scfg), "backbone.json"))
            labels = pav.load_tensors(pav.labels_path(scfg), "delete it and it is drawn again")
            result["labelling_rollouts"] = pav.labelling_rollouts(labels["labelled"], cfg.n_mc)
        results["seeds"][seed] = result
    summarize(results, cfg, seeds, task)
    if len(gammas) > 1:
        summarize_sweep(results, gammas)
    path = os.path.join(cfg.out, f"rl{tag}.json")
    data.save_json(results, path)
    plot(results, os.path.join(cfg.out, f"rl{tag}.png"))
    if "early_pass" in results:
        plot(results, os.path.join(cfg.out, f"rl{tag}_early.png"), early=True)
    print(f"saved {path} and {os.path.join(cfg.out, f'rl{tag}.png')}")


if __name__ == "__main__":
    main()
