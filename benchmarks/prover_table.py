"""Theorem 3.1 on our task: which prover mu = BoK(pi) would help the base policy pi. For mu = pi and each Best-of-K
prover, the theorem's two terms measured on sampled states: distinguishability E_s Var_{a~pi}[A^mu(s, a)] (how much
the prover's advantages tell actions apart) and alignment E_s E_{a~pi}[A^mu A^pi] (how far they agree with pi's own).

    python benchmarks/prover_table.py                 # the default task's cached base policy (built if missing)
    python benchmarks/prover_table.py --task planted  # with the procedural gamma-provers, whose Q^mu is exact

The paper states the terms; we estimate each from two independent halves of the rollouts, so that Monte Carlo noise
inflates neither the variance nor the product (`terms`). Writes runs/<task>/provers.json.
"""

import dataclasses
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch

import data
import pav

def prover_table(model, task, tokenizer, cfg, n_states=None, on_track=False):
    """Distinguishability E_s Var_{a~pi}[A^mu(s,a)] and alignment E_s E_{a~pi}[A^mu(s,a) A^pi(s,a)] of mu = BoK(pi) for
    each K in PROVER_KS, and on planted of the procedural gamma-provers, whose Q^mu is exact (data.Planted).
    From each sampled state s, m actions a ~ pi (one step each); Q^pi(s) and Q^pi(s, a) from two independent halves
    of the rollouts (`terms` says why); n_states states (TABLE_STATES if None). With `on_track` (arithmetic tasks),
    only states whose lines so far are right are kept, from ON_TRACK_DRAWS times as many: from the others an error
    carries forward and a prover all but never succeeds, whatever the step (A^mu ~ 0 for every K), so they scale both
    terms of every prover alike and add only noise."""
    m, half, S = TABLE_ACTIONS, TABLE_MC // 2, n_states or TABLE_STATES
    n = S * (ON_TRACK_DRAWS if on_track else 1)
    g = pav.generator("prover table", cfg.seed, device=next(model.parameters()).device)
    draw = pav.rng("prover table", cfg.seed)
    problems = task.problems(n, draw)
    responses = pav.rollout_responses(model, task, tokenizer, problems, [(i, []) for i in range(n)], 1, cfg,
                                      generator=g)
    table = data.step_end_table(tokenizer, task.delimiter)
    states = [(i, y[:draw.choice(pav.step_cuts(y, table)[:-1])]) for i, y in enumerate(responses)]   # unfinished
    if on_track:
        states = [(i, p) for i, p in states if task.on_track(problems[i], tokenizer.decode(p))][:S]
        S = len(states)
    r = pav.sample(model, [data.prompt_ids(tokenizer, problems[j]) + p for j, p in states], n=m,
                   max_new_tokens=[task.max_new_tokens - len(p) for _, p in states], temperature=pav.TEMPERATURE,
                   stop_table=table, generator=g, **data.special_ids(tokenizer))
    lengths, ids = r.mask.sum(-1).tolist(), r.ids.tolist()
    after = [(states[k // m][0], states[k // m][1] + row[:L]) for k, (row, L) in enumerate(zip(ids, lengths))]
    before = torch.stack([pav.mc_successes(model, task, tokenizer, problems, states, half, cfg, g).view(S, 1)
                          for _ in range(2)])                                                   # (2, S, 1)
    after_c = torch.stack([pav.mc_successes(model, task, tokenizer, problems, after, half, cfg, g).view(S, m)
                           for _ in range(2)])                                                  # (2, S, m)
    rows = [{"prover": "pi" if K == 1 else f"Bo{K}(pi)", "K": K, "states": S,
             **theorem_terms(before, after_c, half, K), "mean_q": float(pav.bok_unbiased(after_c, half, K).mean())}
            for K in PROVER_KS]
    for gamma in (TABLE_GAMMAS if task.name == "planted" else ()):
        V = task.exact_values(gamma)
        q_s = torch.tensor([task.exact_q(p, gamma, V) for _, p in states]).view(S, 1)
        q_sa = torch.tensor([task.exact_q(p, gamma, V) for _, p in after]).view(S, m)
        a = (q_sa - q_s).float()                                                                 # exact: no noise
        a_pi = pav.bok_unbiased(after_c, half, 1) - pav.bok_unbiased(before, half, 1)           # (2, S, m)
        rows.append({"prover": f"gamma={gamma:g}", "gamma": gamma, "states": S, **terms(a, a, a_pi.mean(0)),
                     "mean_q": float(q_sa.mean())})
    return rows


def theorem_terms(before, after, n, K):
    """Theorem 3.1's two terms for mu = BoK(pi) from success counts in two halves of n rollouts each: before (2, S, 1)
    from each state s, after (2, S, m) from each of m sampled actions a ~ pi."""
    a_mu = pav.bok_unbiased(after, n, K) - pav.bok_unbiased(before, n, K)   # (2, S, m): Eq. 2 under BoK(pi), per half
    a_pi = pav.bok_unbiased(after, n, 1) - pav.bok_unbiased(before, n, 1)   # (2, S, m): the same under pi
    return terms(a_mu[0], a_mu[1], a_pi[1])


def terms(a1, a2, a_pi):
    """From two independent unbiased estimates a1, a2 (S, m) of A^mu(s, a) and one a_pi of A^pi(s, a), independent of
    a1: the covariance of a1 and a2 across actions is unbiased for Var_a[A^mu] (Monte Carlo noise does not inflate it),
    and the mean of a1 * a_pi for E_a[A^mu A^pi]; each averaged over states."""
    m, S = a1.shape[1], a1.shape[0]
    var = ((a1 - a1.mean(1, keepdim=True)) * (a2 - a2.mean(1, keepdim=True))).sum(1) / (m - 1)      # (S,)
    align = (a1 * a_pi).mean(1)                                                                      # (S,)
    se = lambda v: float(v.std() / math.sqrt(S))
    return {"distinguishability": float(var.mean()), "distinguishability_se": se(var),
            "alignment": float(align.mean()), "alignment_se": se(align)}


PROVER_KS = (1, 2, 4, 8, 16, 32)        # the provers BoK(pi) of the table
TABLE_GAMMAS = (2, 5, 10, 15, 30)       # planted: the procedural provers of the table
TABLE_STATES, TABLE_ACTIONS, TABLE_MC = 96, 4, 64   # states s, actions a ~ pi per state, rollouts per prefix (2 halves)
ON_TRACK_DRAWS = 8                                  # on_track: states drawn per state kept


def print_table(rows, seconds):
    print(f"prover table ({rows[0]['states']} states x {TABLE_ACTIONS} actions x {TABLE_MC} rollouts, {seconds:.0f}s); "
          "mean ± standard error over states:")
    print(f"{'prover':>12} | {'distinguishability':>22} | {'alignment':>22} | {'mean Q^mu':>9}")
    for r in rows:
        print(f"{r['prover']:>12} | {r['distinguishability']:>12.5f} ± {r['distinguishability_se']:.5f} | "
              f"{r['alignment']:>12.5f} ± {r['alignment_se']:.5f} | {r['mean_q']:>9.3f}")


def main(argv=None):
    cfg, device, task, model, tokenizer = pav.setup(pav.PavConfig, argv)
    t0 = time.time()
    rows = prover_table(model, task, tokenizer, cfg)
    print_table(rows, time.time() - t0)
    data.save_json({"task": cfg.task, "provers": rows, "config": dataclasses.asdict(cfg)},
                  os.path.join(cfg.out, "provers.json"))
    print(f"saved {os.path.join(cfg.out, 'provers.json')}")


if __name__ == "__main__":
    main()
