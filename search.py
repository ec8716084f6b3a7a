"""Test-time search with process advantage verifiers (section 4.1): step-level beam search scored by the effective
reward, against best-of-N ranked by an outcome verifier, at counted token cost.

    python search.py                         # CPU: reuses the policy and verifiers of `python rl.py` (or builds them)
    python search.py --task arith            # the lesson: where best-of-N is at its ceiling, search has no room
    python search.py --provers 1,2,4,8,16,32 # PAV beam search with mu = BoK(pi) for each K (Fig. 5b)
    python search.py --model DIR --data train.jsonl --eval-data test.jsonl   # your causal LM on one GPU

On held-out problems, for each budget N: best-of-N ranked by the ORM or by the PQM's final Q_hat^pi ("PAV as ORM"),
and Pass@N (the ceiling), on one set of N samples per problem; beam search with B = N beams and C next steps per beam,
scored by Q_hat^pi alone ("q_beam") or by the effective reward Q_hat^pi + alpha A_hat^mu ("pav_beam"). Writes to --out
search.json (the table), search.png (accuracy against sampled tokens, cf. Fig. 4) and search_samples.txt (beams).

Differences from the paper:
1. The search starts from B copies of the bare problem, so the first depth already samples B * C first steps (one root
   with C children would leave a beam of N = 32 nearly empty on our responses of five to seven steps).
2. A finished response keeps the score of its last step and competes with the new candidates at every later depth; at
   equal scores a finished response is kept first, then the earlier candidate. Identical candidates stay separate
   beams, as in plain beam search (merging them stalls search on arithmetic, where every line has one right text).
3. Cost is sampled tokens (and steps) of the policy; the verifiers' forward passes are not counted, as in the paper.
4. alpha is tuned (with --alphas) on training problems at one budget (TUNE_N), not over the full range of N.
5. The compute-efficiency ratio compares the tokens ORM best-of-N spends at its best accuracy with those PAV beam
   search needs for it (`compute_efficiency`); the paper compares at N = 128.
"""

import dataclasses
import math
import os
import time

import numpy as np
import torch
from tqdm import tqdm

import data
import pav
from pav import arg


@dataclasses.dataclass
class SearchConfig(pav.Config):
    ns: str = arg("2,4,8,16,32", "budgets N: samples of best-of-N, beams of beam search")
    expand: int = arg(3, "C: next steps sampled from each beam at every depth", "positive")
    search_problems: int = arg(128, "held-out problems of the table", "positive")
    alphas: str = arg("", "if set (e.g. 0,0.2,0.5,1,2): pick alpha among these on validation problems; else --alpha")
    provers: str = arg("", "if set (e.g. 1,2,4,8,16,32): PAV beam search at the largest N with mu = BoK(pi) per K")


TUNE_N, TUNE_PROBLEMS = 8, 128   # --alphas: the budget and the number of (training) problems they are compared on
BON_REACH = 4                    # best-of-N also at 4 x the largest N (128 for N = 32): past the beams' token spend


# --------------------------------------------------------------------------------------------------------------
# Step-level beam search (section 4.1): the core takes its step sampler and its scorer as functions

@dataclasses.dataclass
class Beam:
    response: list   # token ids after the prompt
    score: float     # search score of its newest step
    q: float         # Q_hat^pi of the prefix, which picks the final answer
    done: bool       # a complete response: never extended again


def beam_search(n_problems, sample_steps, score, done, width, expand, max_depth, merge=False):
    """Beam search over steps for all problems at once (differences 1 and 2 above). sample_steps(rows, C) -> C next
    steps (token lists) of each (problem, prefix) row; score(rows) -> (search score, Q_hat^pi), two (R,) tensors;
    done(i, y) -> whether y is a complete response; `merge`: identical candidates are one (the tests' brute force).
    Returns each problem's final pool (best first), answer, and sampled tokens and steps."""
    pool = [[Beam([], 0.0, 0.0, False) for _ in range(width)] for _ in range(n_problems)]   # B copies of the problem
    tokens, steps = [0] * n_problems, [0] * n_problems
    for _ in range(max_depth):
        open_ = [(i, b.response) for i in range(n_problems) for b in pool[i] if not b.done]
        if not open_:
            break
        children = sample_steps(open_, expand)                           # all beams of all problems in one call
        candidates = [[b for b in beams if b.done] for beams in pool]     # finished responses stay in the running
        seen = [{tuple(b.response) for b in c} for c in candidates]
        new = []
        for (i, y), kids in zip(open_, children):
            tokens[i] += sum(len(a) for a in kids)
            steps[i] += len(kids)
            for a in kids:
                if not (merge and tuple(y + a) in seen[i]):
                    seen[i].add(tuple(y + a))
                    new.append((i, y + a))
        s, q = score(new)
        for (i, y), s_i, q_i in zip(new, s.tolist(), q.tolist()):
            candidates[i].append(Beam(y, s_i, q_i, done(i, y)))
        # keep the top B by score; at a tie a finished response first, then the earlier candidate (a stable sort)
        pool = [sorted(c, key=lambda b: (-b.score, not b.done))[:width] for c in candidates]
    # the answer: the finished beam with the highest Q_hat^pi, the first at a tie (any beam if max_depth cut it short)
    answers = [max([b for b in beams if b.done] or beams, key=lambda b: b.q) for beams in pool]
    return pool, answers, tokens, steps


def pav_scorer(pav_, prompts, alpha, record=None):
    """Score of a candidate = the effective reward of its newest step; alpha = 0 is Q_hat^pi alone. `record`, a list,
    collects each depth's candidates with both scores (for `ranking_disagreement`)."""
    def score(rows):
        q_pi, q_mu, a_mu, m, m_adv = pav_.score([prompts[i] for i, _ in rows], [y for _, y in rows])  # (R, H+1)...
        last = m.sum(1) - 1                                               # (R,) the prefix after the newest step
        r = torch.arange(len(rows))
        # Eq. 5: effective reward Q^pi(s_h, a_h) + alpha * A^mu(s_h, a_h) of the newest step h
        s, q = pav.effective_reward(q_pi, a_mu, alpha)[r, last - 1], q_pi[r, last]          # (R,), (R,)
        if record is not None:
            record.append(([i for i, _ in rows], s, q))
        return s, q
    return score


def ranking_disagreement(record, width):
    """How often the effective reward keeps other prefixes than Q_hat^pi would: over every problem and depth of a
    `record`, the share of the top-`width` new candidates by the search score that are not among the top `width` by
    Q_hat^pi. Among the children of one beam the two rank alike (Q^mu = 1 - (1 - Q^pi)^K rises with Q^pi, and
    -alpha Q^mu(parent) is shared), so they can differ only across parents."""
    differ = kept = 0
    for problem, s, q in record:
        by = {}
        for k, i in enumerate(problem):
            by.setdefault(i, []).append(k)
        for rows in by.values():
            top = lambda v: set(sorted(rows, key=lambda k: -v[k].item())[:width])    # stable: the earlier at a tie
            a = top(s)
            differ, kept = differ + len(a - top(q)), kept + len(a)
    return differ / max(kept, 1)


def step_sampler(model, task, tokenizer, problems, cfg, table, g):
    """The rollout engine in one-step mode: C next steps of every (problem, prefix) row, --batch-rows rows a call."""
    def sample_steps(rows, expand):
        out, per_call = [], max(1, cfg.batch_rows // expand)
        for s in range(0, len(rows), per_call):
            chunk = rows[s:s + per_call]
            r = pav.sample(model, [data.prompt_ids(tokenizer, problems[i]) + y for i, y in chunk], n=expand,
                           max_new_tokens=[task.max_new_tokens - len(y) for _, y in chunk],
                           temperature=pav.TEMPERATURE, stop_table=table, generator=g, **data.special_ids(tokenizer))
            lengths, new = r.mask.sum(-1).tolist(), r.ids.tolist()        # (R * C,), (R * C, T)
            steps = [row[:L] for row, L in zip(new, lengths)]
            out += [steps[k * expand:(k + 1) * expand] for k in range(len(chunk))]
        return out
    return sample_steps


def run_beam(model, pav_, task, tokenizer, problems, width, alpha, cfg, table, record=None):
    """Beam search on `problems`; every call draws the same sampling noise ("search" stream), whatever ran before."""
    prompts = [data.prompt_ids(tokenizer, p) for p in problems]
    g = pav.generator("search", cfg.seed, device=next(model.parameters()).device)
    return beam_search(len(problems), step_sampler(model, task, tokenizer, problems, cfg, table, g),
                       pav_scorer(pav_, prompts, alpha, record), lambda i, y: data.is_complete(y, task, tokenizer),
                       width, cfg.expand, max_depth=task.max_new_tokens)


# --------------------------------------------------------------------------------------------------------------
# Best-of-N and Pass@N: one set of N samples per problem, ranked two ways

def sample_best_of_n(model, task, tokenizer, problems, n, cfg, table):
    """n complete responses per problem (a flat list, those of a problem adjacent) and, as (P, n) tensors, each one's
    outcome Rex(y, y*), sampled tokens (EOS included) and steps."""
    g = pav.generator("search", cfg.seed, device=next(model.parameters()).device)
    responses = pav.rollout_responses(model, task, tokenizer, problems, [(i, []) for i in range(len(problems))], n,
                                      cfg, generator=g)
    correct = torch.tensor([data.outcome(task, tokenizer, problems[k // n], y)
                            for k, y in enumerate(responses)]).view(-1, n)                    # (P, n)
    tokens = torch.tensor([float(len(y)) for y in responses]).view(-1, n)                     # (P, n)
    steps = torch.tensor([float(len(pav.step_cuts(y, table)) - 1) for y in responses]).view(-1, n)   # (P, n)
    return responses, correct, tokens, steps


def final_values(verifier, tokenizer, prompts, responses, table, batch):
    """A verifier's prediction after the last step of each response (R,), which best-of-N ranks by; index 0, the bare
    problem's value, is the same for every sample of a problem."""
    q, m = pav.predict_q(verifier, tokenizer, prompts, responses, table, batch)       # (R, H+1) each
    return q[torch.arange(len(q)), m.sum(1) - 1]                                       # (R,)


def best_of_n(scores, correct, n):
    """(P,) correctness of the top-scored of each problem's first n samples (the first at a tie); inputs (P, N_max)."""
    pick = scores[:, :n].argmax(1)                                        # (P,)
    return correct[:, :n].gather(1, pick[:, None]).squeeze(1)             # (P,)


def pass_at_n(correct, n):
    """Pass@N: a problem counts if any of its first n samples is correct. (P, N_max) -> (P,)"""
    return correct[:, :n].max(1).values                                   # (P,)


# --------------------------------------------------------------------------------------------------------------
# Summary: intervals, compute efficiency, plot

def wilson(k, n, z=1.96):
    """95% Wilson score interval of a binomial proportion k / n."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return min(p, max(0.0, centre - half)), max(p, min(1.0, centre + half))   # rounding never leaves p outside


def table_row(method, n, correct, tokens, steps, pool_pass):
    """One row: correct (P,) in {0, 1}, tokens and steps per problem (P,), and the Pass@N of the final candidates."""
    k, P = float(sum(correct)), len(correct)
    low, high = wilson(k, P)
    return {"method": method, "n": n, "tokens": float(np.mean(tokens)), "steps": float(np.mean(steps)),
            "accuracy": k / P, "ci_low": low, "ci_high": high, "problems": P, "pool_pass": float(np.mean(pool_pass))}


def tokens_to_reach(curve, target):
    """Tokens at which an (tokens, accuracy) curve, ordered by budget, first reaches target: linear interpolation in
    log tokens between the two budgets that bracket it. None if it never does."""
    for j, (t, a) in enumerate(curve):
        if a >= target:
            if j == 0:
                return t
            t0, a0 = curve[j - 1]
            return math.exp(math.log(t0) + (target - a0) / (a - a0) * (math.log(t) - math.log(t0)))
    return None


def accuracy_at(curve, tokens):
    """An (tokens, accuracy) curve's accuracy at `tokens`, interpolated linearly in log tokens between the two budgets
    that bracket it; None outside the curve."""
    for (t0, a0), (t1, a1) in zip(curve, curve[1:]):
        if t0 <= tokens <= t1:
            return a0 + (a1 - a0) * (math.log(tokens) - math.log(t0)) / (math.log(t1) - math.log(t0))
    return None


def curve(rows, method):
    """(tokens, accuracy) of one method's rows, by budget."""
    return [(r["tokens"], r["accuracy"]) for r in sorted(rows, key=lambda r: r["n"]) if r["method"] == method]


def compute_efficiency(rows):
    """ORM best-of-N's tokens at its best accuracy (its smallest budget reaching it) / PAV beam search's to reach it.
    A lower bound when the beam's smallest budget already reaches it (the grid cannot say how much less would do)."""
    orm, beam = curve(rows, "orm_best_of_n"), curve(rows, "pav_beam")
    best = max(a for _, a in orm)
    t_orm = next(t for t, a in orm if a == best)
    t_pav = tokens_to_reach(beam, best)
    return {"ratio": t_orm / t_pav if t_pav else None, "lower_bound": t_pav is not None and beam[0][1] >= best,
            "target_accuracy": best, "tokens_orm": t_orm, "tokens_pav_beam": t_pav}


STYLE = {"orm_best_of_n": ("o-", "ORM best-of-N"), "pav_as_orm": ("v-", "PAV as ORM best-of-N"),
         "pass_at_n": ("k--", "Pass@N"), "q_beam": ("^-", r"beam search, $\hat Q^\pi$"),
         "pav_beam": ("s-", r"beam search, $\hat Q^\pi + \alpha \hat A^\mu$ (PAV)")}


def plot(rows, task, alpha, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for method, (style, label) in STYLE.items():
        rs = sorted([r for r in rows if r["method"] == method], key=lambda r: r["n"])
        x, y = [r["tokens"] for r in rs], [r["accuracy"] for r in rs]
        err = [[a - r["ci_low"] for a, r in zip(y, rs)], [r["ci_high"] - a for a, r in zip(y, rs)]]
        ax.errorbar(x, y, yerr=err, fmt=style, ms=4, capsize=2, label=label.replace(r"\alpha", f"{alpha:g}"))
    ax.set(xscale="log", xlabel="sampled tokens per problem", ylabel="held-out accuracy (95% Wilson interval)",
           title=f"{task}: search vs best-of-N at matched compute (cf. Fig. 4)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    data.save_png(fig, path)
    plt.close(fig)


# --------------------------------------------------------------------------------------------------------------

def main(argv=None):
    cfg = pav.parse_config(SearchConfig, argv)
    pav.check_config(cfg)   # reject nonsense before any work
    ns = sorted(set(pav.number_list(cfg.ns, "ns")))
    alphas = pav.number_list(cfg.alphas, "alphas", float, positive=False) if cfg.alphas else []
    if any(not 0 <= a <= 10 for a in alphas):
        pav.fail(f"--alphas must be in [0, 10], got {cfg.alphas!r}")
    provers = pav.number_list(cfg.provers, "provers") if cfg.provers else []
    device, dtype = pav.pick_device()
    print(f"device {device} | dtype {dtype} | task {cfg.task} | seed {cfg.seed} | budgets {ns} | C {cfg.expand} | "
          f"out {cfg.out}")
    t_start = time.time()
    task = pav.make_task(cfg)
    model, tokenizer = pav.load_or_build_policy(task, cfg, device)
    verifiers = pav.load_or_train_verifiers(model, task, tokenizer, cfg, device)
    table = data.step_end_table(tokenizer, task.delimiter)
    pav_ = pav.make_pav(verifiers, tokenizer, task, cfg)
    problems = pav.eval_problems(task, cfg)[:cfg.search_problems]
    prompts = [data.prompt_ids(tokenizer, p) for p in problems]
    summary = {"task": cfg.task, "config": dataclasses.asdict(cfg), "interval": "95% Wilson score"}

    alpha = cfg.alpha   # picked on training problems, never on the held-out problems of the table
    if alphas:
        val = task.problems(TUNE_PROBLEMS, pav.rng("search", cfg.seed))
        tuning = []
        for a in tqdm(alphas, desc="tuning alpha", leave=False):
            _, answers, tok, _ = run_beam(model, pav_, task, tokenizer, val, TUNE_N, a, cfg, table)
            acc = float(np.mean([data.outcome(task, tokenizer, p, b.response) for p, b in zip(val, answers)]))
            tuning.append({"alpha": a, "accuracy": acc, "tokens": float(np.mean(tok))})
            tqdm.write(f"alpha {a:g} | N {TUNE_N} | validation accuracy {acc:.3f} ({len(val)} problems)")
        alpha = max(tuning, key=lambda t: t["accuracy"])["alpha"]          # the smallest alpha at a tie
        summary["alpha_tuning"] = tuning
    summary["alpha"] = alpha

    rows = []
    print(f"{len(problems)} held-out problems; mu = {cfg.prover}, alpha {alpha:g}; accuracy with a 95% Wilson interval")
    print(f"{'method':>14} | {'N':>4} | {'tokens/pb':>9} | {'steps':>7} | accuracy [95% CI]   | pool Pass@N")
    report = lambda r: tqdm.write(f"{r['method']:>14} | {r['n']:>4} | {r['tokens']:>9.1f} | {r['steps']:>7.1f} | "
                                  f"{r['accuracy']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}] | {r['pool_pass']:.3f}")
    # best-of-N, PAV as ORM and Pass@N share one set of samples per problem; N takes the first N of them. Best-of-N
    # also runs at BON_REACH x the largest N: a beam samples C steps per beam and depth, and the paper's compute
    # efficiency is measured against best-of-128
    bon_ns = ns + [BON_REACH * max(ns)]
    responses, correct, lengths, n_steps = sample_best_of_n(model, task, tokenizer, problems, max(bon_ns), cfg, table)
    flat_prompts = [prompts[k // max(bon_ns)] for k in range(len(responses))]
    scores = {}   # best-of-N's ranking by each verifier
    for method, v in (("orm_best_of_n", "orm"), ("pav_as_orm", "pqm")):
        values = final_values(verifiers[v], tokenizer, flat_prompts, responses, table, pav_.batch)   # (R,)
        scores[method] = values.view(correct.shape)                                                  # (P, N_max)
    for n in bon_ns:
        cost = (lengths[:, :n].sum(1).tolist(), n_steps[:, :n].sum(1).tolist())
        for method in ("orm_best_of_n", "pav_as_orm", "pass_at_n"):
            chosen = pass_at_n(correct, n) if method == "pass_at_n" else best_of_n(scores[method], correct, n)
            rows.append(table_row(method, n, chosen.tolist(), *cost, pass_at_n(correct, n).tolist()))
            report(rows[-1])

    samples = os.path.join(cfg.out, "search_samples.txt")   # the final pools of two problems per row, with scores
    os.makedirs(cfg.out, exist_ok=True)
    open(samples, "w").close()

    def beam_rows(method, n, alpha, pav_for=pav_, record=None):
        pool, answers, tok, st = run_beam(model, pav_for, task, tokenizer, problems, n, alpha, cfg, table, record)
        chosen = [data.outcome(task, tokenizer, p, b.response) for p, b in zip(problems, answers)]
        hit = [max([data.outcome(task, tokenizer, p, b.response) for b in beams if b.done] or [0.0])
               for p, beams in zip(problems, pool)]                       # Pass@N of the final pool (Fig. 6a)
        rows.append(table_row(method, n, chosen, tok, st, hit))
        report(rows[-1])
        with open(samples, "a") as f:
            for p, beams in list(zip(problems, pool))[:2]:
                f.write(f"--- {method} | N {n} | problem {p.prompt!r} | answer {p.answer}\n" + "".join(
                    f"  score {b.score:+.3f} | Q_hat {b.q:.3f} | {'done' if b.done else 'open'} | "
                    f"Rex {data.outcome(task, tokenizer, p, b.response):.0f} | {tokenizer.decode(b.response)!r}\n"
                    for b in beams))

    kept = {}
    for n in tqdm(ns, desc="beam search", leave=False):
        beam_rows("q_beam", n, 0.0)
        record = []
        beam_rows("pav_beam", n, alpha, record=record)
        kept[n] = ranking_disagreement(record, n)
    for K in provers:   # Fig. 5b: the prover mu = BoK(pi) of the PAV, at the largest budget
        beam_rows(f"pav_beam_bo{K}", max(ns), alpha, pav.PAV(verifiers["pqm"], tokenizer, table, K, pav_.batch))

    eff = compute_efficiency(rows)
    acc = {r["method"]: r["accuracy"] for r in rows if r["n"] == max(ns)}   # at the largest budget
    gap = acc["pav_beam"] - acc["orm_best_of_n"]
    gap_q = acc["pav_beam"] - acc["q_beam"]
    spend = next(r["tokens"] for r in rows if r["method"] == "pav_beam" and r["n"] == max(ns))
    matched = accuracy_at(curve(rows, "orm_best_of_n"), spend)            # ORM best-of-N at the beam's token spend
    summary.update(rows=rows, compute_efficiency=eff["ratio"], compute_efficiency_lower_bound=eff["lower_bound"],
                   compute_efficiency_detail=eff, gap_at_max_n=gap, gap_to_q_beam_at_max_n=gap_q, max_n=max(ns),
                   gap_at_matched_tokens=None if matched is None else acc["pav_beam"] - matched,
                   differently_kept=kept, problems=len(problems), seconds=time.time() - t_start)
    ratio = "not reached" if eff["ratio"] is None else f"{'>=' if eff['lower_bound'] else ''}{eff['ratio']:.2f}x"
    print(f"compute efficiency (ORM best-of-N tokens for its best accuracy {eff['target_accuracy']:.3f} / PAV beam "
          f"search tokens to reach it, log-linear interpolation): {ratio}" +
          (" (a lower bound: the beam's smallest budget already reaches it)" if eff["lower_bound"] else ""))
    print(f"gap at N = {max(ns)}: PAV beam {acc['pav_beam']:.3f} - ORM best-of-N {acc['orm_best_of_n']:.3f} = "
          f"{gap:+.3f}; - Q^pi beam {acc['q_beam']:.3f} = {gap_q:+.3f}")
    if matched is not None:
        print(f"gap at matched tokens ({spend:.0f} a problem, the PAV beam's at N = {max(ns)}): PAV beam "
              f"{acc['pav_beam']:.3f} - ORM best-of-N {matched:.3f} = {acc['pav_beam'] - matched:+.3f}")
    print("candidates the PAV beam keeps that the Q^pi ranking would not (same pool, per depth): " +
          ", ".join(f"N = {n}: {share:.1%}" for n, share in kept.items()))
    path, png = os.path.join(cfg.out, "search.json"), os.path.join(cfg.out, "search.png")
    data.save_json(summary, path)
    plot(rows, cfg.task, alpha, png)
    print(f"saved {path} and {png} ({time.time() - t_start:.0f}s)")


if __name__ == "__main__":
    main()
