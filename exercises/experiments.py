"""Experiments with your own code: each runs a piece of the real pipeline (rl.py's training loop, the prover table) with
the functions you wrote in exercises/ in place of the project's, on the base policy and the verifier that `python rl.py`
cached in runs/facts/seed0/, and prints numbers to set beside the paper's. Run `python rl.py` once first (about 15
minutes on two CPU cores); each experiment then takes at most five minutes.

    python exercises/experiments.py provers             # A. which prover? (your bok_unbiased, exercise 2)
    python exercises/experiments.py rl                  # B. outcome-only RL against the effective reward (1, 3, 4)
    python exercises/experiments.py reward-q            # C. rewarding Q^mu instead of A^mu (1, 3, 4)
    python exercises/experiments.py rl --solutions      # the same with exercises/solutions/, our code

A. Theorem 3.1 bounds a prover's help by two terms: distinguishability E_s Var_{a~pi}[A^mu] (how much the prover's
   advantages tell pi's candidate steps apart) and alignment E_s E_{a~pi}[A^mu A^pi]. Remark 3.1 says that while
   Q^pi = O(1/K), the prover Best-of-K raises distinguishability by about K^2. The experiment estimates both terms for
   mu = BoK(pi), K = 1 .. 32, from Monte Carlo rollouts of the base policy (no verifier), at states whose lines so far
   are right (from the others a prover all but never succeeds). Up to which K does distinguishability grow like K^2,
   and where does it stop growing? Compare with 1 / Q^pi (the table prints the mean Q^mu; K = 1 is Q^pi). Which K
   would you pick, and is it the paper's Bo4?
B. Section 5 (Fig. 7) reports RL on the effective reward Rex + alpha * A^mu several times more sample-efficient than
   RL on the outcome alone, and several points more accurate. The experiment runs both for rl.py's 80 iterations from
   the same base policy, with the PAV that `python rl.py` learned on the policy's own weights, your Best-of-K (exercise
   1), your advantages (exercise 3) and your per-token rewards (exercise 4); with right functions it repeats
   `python rl.py`'s two runs exactly. Does the paper's prediction hold? Open the samples file it names and find a step
   whose A^mu is positive but whose line is wrong. Why does the verifier credit it?
C. Appendix G: rewarding Q^mu (the prover's value after each step) instead of its change A^mu invites steps that make
   no progress. So that the verifier is not the problem, this experiment uses a teacher's PQM (built on the policy's
   clean warm start, a model that solves the task: the README's upper bound), and runs PAV-RL twice for 40 iterations,
   on A^mu and on Q^mu. Which learns faster? Show that in rl.py, which rewards each step by its own term, the two
   rewards have the same expected gradient (hint: Eq. 2 splits Q^mu(s_h, a_h) into a part fixed before step h and
   A^mu). What would a policy need, then, to farm Q^mu as the paper's did?

Each experiment states the range our runs gave (`EXPECTED`); our answers, with the output of our runs, are in
exercises/solutions/experiments.md. Results: runs/facts/seed0/exercises/<experiment>.json and .png.
"""

import argparse
import dataclasses
import importlib
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch

import data
import pav
import rl
from benchmarks import prover_table

# Where each exercise's functions go in the pipeline, and a small call that shows whether they are written yet.
SWAPS = {
    "ex1_best_of_k": [(pav, "bok_closed", lambda f: f(torch.tensor([0.5]), 2))],
    "ex2_unbiased_bok": [(pav, "bok_unbiased", lambda f: f(torch.tensor([1.0]), 2, 1))],
    "ex3_advantage": [(pav, "advantages", lambda f: f(torch.tensor([0.2, 0.6]))),
                      (pav, "effective_reward", lambda f: f(torch.zeros(1, 2), torch.zeros(1, 1), 1.0))],
    "ex4_token_rewards": [(rl, "token_rewards", lambda f: f(torch.zeros(1, 1), torch.ones(1, 1).bool(),
                                                            torch.ones(1, 1).bool()))],
}
ITERATIONS = {"rl": 80, "reward-q": 40}   # B's are rl.py's own: with our functions it repeats `python rl.py` exactly
EXPERIMENTS = {"provers": ["ex2_unbiased_bok"], "rl": ["ex1_best_of_k", "ex3_advantage", "ex4_token_rewards"],
               "reward-q": ["ex1_best_of_k", "ex3_advantage", "ex4_token_rewards"]}
# What our runs printed with exercises/solutions/ (exercises/solutions/experiments.md): a result far outside these
# ranges points at a bug in a swapped function before it points at the paper.
EXPECTED = {
    "provers": "distinguishability 0.006-0.010 for every K, highest at K = 8-16 (1.5x pi's), lower at K = 32; "
               "alignment rising with K from 0.006 to 0.013; standard errors about 0.003",
    "rl": "ORM-RL 0.514, PAV-RL 0.000, `python rl.py`'s own numbers to the digit; lines such as 8+6=6 credited",
    "reward-q": "PAV-RL on A^mu 0.32, on Q^mu 0.59 (one seed; both learn, neither is hacked); 45 tokens, 7 steps",
}


PROVER_STATES = 192   # A: states whose lines so far are right (the others add nothing but noise: prover_table)


def swap_in(names, solutions):
    """Put the exercises' functions (yours, or with `solutions` ours) in place of the project's; one line and exit 2 if
    one is not written yet."""
    package = "exercises.solutions" if solutions else "exercises"
    for name in names:
        module = importlib.import_module(f"{package}.{name}")
        for target, attr, probe in SWAPS[name]:
            f = getattr(module, attr)
            try:
                probe(f)
            except NotImplementedError:
                pav.fail(f"{attr} in {package.replace('.', '/')}/{name}.py is not written yet: do exercise "
                         f"{name[2]} first (or add --solutions to run ours)")
            setattr(target, attr, f)
        print(f"using {', '.join(attr for _, attr, _ in SWAPS[name])} from {package.replace('.', '/')}/{name}.py")


def cached_policy(cfg):
    """The base policy `python rl.py` cached; one line and exit 2 if there is none."""
    task, (device, _) = pav.make_task(cfg), pav.pick_device()
    path = os.path.join(pav.seed_dir(cfg), "policy")
    if data.read_json(os.path.join(path, "settings.json")) != pav.policy_settings(task, cfg):
        pav.fail(f"no base policy cached in {path}: run `python rl.py` first (about 15 minutes)")
    model, tokenizer = pav.load_or_build_policy(task, cfg, device)
    return task, device, model, tokenizer


def provers(cfg, task, device, model, tokenizer):
    """A: Theorem 3.1's two terms for mu = BoK(pi), K = 1 .. 32, with your bok_unbiased."""
    t0 = time.time()
    rows = prover_table.prover_table(model, task, tokenizer, cfg, n_states=PROVER_STATES, on_track=True)
    prover_table.print_table(rows, time.time() - t0)
    base = rows[0]["distinguishability"]
    for r in rows[1:]:
        print(f"  {r['prover']}: distinguishability {r['distinguishability'] / base:.1f}x pi's (K^2 = {r['K'] ** 2})")
    return {"provers": rows}


def rl_runs(cfg, task, device, model, tokenizer, control):
    """B and C: short RL runs from the base policy through rl.train, with the swapped functions."""
    if control:   # C: a teacher's PQM, so that the verifier is not what fails
        cfg = dataclasses.replace(cfg, verifier_model="clean")
        runs = [("pav_a_teacher", ""), ("pav_q_teacher", "reward-q")]
    else:
        if not os.path.exists(os.path.join(pav.verifier_dir(task, cfg), "pqm")):
            pav.fail(f"no PQM cached in {pav.verifier_dir(task, cfg)}: run `python rl.py` first")
        runs = [("orm", ""), ("pav", "")]
    scorer = pav.make_pav(pav.load_or_train_verifiers(model, task, tokenizer, cfg, device, names=("pqm",)),
                          tokenizer, task, cfg)
    out = os.path.join(pav.seed_dir(cfg), "exercises", "reward-q" if control else "rl")
    os.makedirs(out, exist_ok=True)
    results = {}
    for name, run_control in runs:
        alpha = 0.0 if name == "orm" else cfg.alpha
        t0 = time.time()
        _, history = rl.train(name, model, scorer, task, tokenizer, dataclasses.replace(cfg, control=run_control),
                              cfg.seed, alpha, out)
        last = history["log"][-1]
        results[name] = {"curve": history["curve"], "final": rl.smoothed(history["curve"])[-1],
                         "last_iteration": {k: last[k] for k in ("reward", "sound", "length", "steps", "adv_mean")},
                         "samples": os.path.join(out, f"samples_{name}.txt"), "seconds": time.time() - t0}
    print(f"\n{'run':>14} | start | final (median of the last 3 evaluations) | at the last iteration: reward, sound, "
          "length, steps, mean step term")
    for name, r in results.items():
        s = r["last_iteration"]
        print(f"{name:>14} | {r['curve'][0]['accuracy']:.3f} | {r['final']:.3f} | {s['reward']:.3f}, {s['sound']:.3f}, "
              f"{s['length']:.1f}, {s['steps']:.1f}, {s['adv_mean']:+.3f} | samples: {r['samples']}")
    return {"runs": results}


def plot(result, experiment, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    if experiment == "provers":
        rows = [r for r in result["provers"] if "K" in r]
        for key in ("distinguishability", "alignment"):
            ax.errorbar([r["K"] for r in rows], [r[key] for r in rows], [r[key + "_se"] for r in rows], marker="o",
                        capsize=3, label=key)
        ax.set_xscale("log", base=2)
        ax.set(xlabel="K of the prover Best-of-K(pi)", ylabel="Theorem 3.1's term", title="A: which prover?")
    else:
        for name, r in result["runs"].items():
            ax.plot([c["responses"] for c in r["curve"]], rl.smoothed(r["curve"]), "o-", ms=3, label=name)
        ax.set(xlabel="sampled responses", ylabel="held-out accuracy\n(median of the last 3 evaluations)",
               title=f"{'C: Q^mu or A^mu' if experiment == 'reward-q' else 'B: outcome or effective reward'}")
    ax.legend()
    fig.tight_layout()
    data.save_png(fig, path)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "),
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.error = lambda msg: pav.fail(msg)
    ap.add_argument("experiment", choices=list(EXPERIMENTS), help="A: provers, B: rl, C: reward-q")
    ap.add_argument("--solutions", action="store_true", help="run exercises/solutions/ instead of your exercises/")
    ap.add_argument("--iterations", type=int, default=0, help="RL iterations of each run (B and C); 0: B 80, C 40")
    args = ap.parse_args(argv)
    if args.iterations < 0:
        pav.fail(f"--iterations must be a non-negative integer, got {args.iterations}")
    args.iterations = args.iterations or ITERATIONS.get(args.experiment, 1)
    cfg = pav.parse_config(rl.RLConfig, ["--task", "facts", "--iterations", str(args.iterations)])
    pav.check_config(cfg)
    swap_in(EXPERIMENTS[args.experiment], args.solutions)
    task, device, model, tokenizer = cached_policy(cfg)
    print(f"experiment {args.experiment}; our runs gave: {EXPECTED[args.experiment]}")
    t0 = time.time()
    if args.experiment == "provers":
        result = provers(cfg, task, device, model, tokenizer)
    else:
        result = rl_runs(cfg, task, device, model, tokenizer, control=args.experiment == "reward-q")
    result.update(experiment=args.experiment, code="solutions" if args.solutions else "yours",
                  iterations=args.iterations, seconds=time.time() - t0)
    path = os.path.join(pav.seed_dir(cfg), "exercises", args.experiment)
    data.save_json(result, path + ".json")
    plot(result, args.experiment, path + ".png")
    print(f"{time.time() - t0:.0f}s; saved {path}.json and {path}.png. Our runs gave: {EXPECTED[args.experiment]}")


if __name__ == "__main__":
    main()
