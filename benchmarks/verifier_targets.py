"""What the arith PQM learns from which target: train the same verifier on several targets, compare them held out.

    python benchmarks/verifier_targets.py --threads 2         # CPU, about 10 minutes
    python benchmarks/verifier_targets.py --steps 400         # the pipeline's own step count

Every target is built from one set of `--problems` seed rollouts of the cached arith base policy:
1. mc: the Monte Carlo label c / n_mc under pi, exactly what `pav.py` trains the PQM on;
2. exact_q: the same Q^pi without sampling noise. On arith an error carries forward, so Q^pi(prefix) is 0 once a line
   is wrong and otherwise depends only on the depth; the target is [all lines so far correct] times the mean
   Monte Carlo label of the all-correct prefixes at that depth;
3. all_correct: the indicator [all lines so far correct] itself, a 0/1 target (not a Q-value);
4. mc_boK and exact_boK (K a positive integer, K <= n_mc for mc_boK): Q^{BoK} = 1 - (1 - Q^pi)^K instead of Q^pi,
   from the same rollouts (`pav.bok_unbiased`) or without noise. They mark the same prefixes as wrong as Q^pi does,
   with a larger gap to the right ones early on; mc_bo16 with 16 rollouts is "any rollout succeeded". Their MAE is
   that of Q^pi read back as 1 - (1 - q)^(1/K).

Each target trains a fresh `pav.Verifier` on the policy with `pav.train_verifier` (the PQM's own trainer and
settings), and the report compares each against the held-out Monte Carlo labels of `pav.py` (`pav.verifier_report`).
It also gives each verifier's held-out accuracy at telling all-correct prefixes from the rest (ranking by AUC, so
that the scale of a Q-value does not matter). Results go to `<out>/verifier_targets.json`.
"""

import copy
import dataclasses
import json
import os
import random
import sys
import time
from dataclasses import dataclass

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # run from the repo root

import torch

import data
import pav
from pav import arg


def bok_of(name):
    """K of a target named mc_boK or exact_boK, else None."""
    kind, _, k = name.partition("_bo")
    return int(k) if kind in ("mc", "exact") and k.isdigit() and int(k) > 0 else None


@dataclass
class Bench:
    problems: int = arg(2048, "training problems, one seed rollout each")
    n_mc: int = arg(16, "Monte Carlo rollouts per training prefix")
    steps: int = arg(1000, "training steps of each verifier")
    batch: int = arg(64, "responses per training step")
    targets: str = arg("mc,exact_q,all_correct", "targets to train on, comma-separated: mc, exact_q, all_correct, "
                                                 "mc_boK, exact_boK (e.g. mc_bo4)")
    seed: int = arg(0, "seed of the rollouts and of training")
    threads: int = arg(0, "torch CPU threads; 0 keeps torch's default")


def all_correct(task, problem, response, cuts):
    """(H+1,) 1.0 where every line of the prefix equals the clean solution's line (the bare problem counts as correct)."""
    clean = task.solution(problem, 0.0, random.Random(0)).split("\n")
    lines = task.tokenizer.decode(response).split("\n")
    ok = [1.0]
    for h in range(1, len(cuts)):
        ok.append(ok[-1] * float(h - 1 < len(clean) and lines[h - 1] == clean[h - 1]))
    return ok


def flag_table(task, problems, index, responses, table, width):
    """all_correct of every prefix of every response: (R, width), 0 past a response's last prefix."""
    ok = torch.zeros(len(responses), width)
    for r, (i, y) in enumerate(zip(index, responses)):
        flags = all_correct(task, problems[i], y, pav.step_cuts(y, table))
        ok[r, :len(flags)] = torch.tensor(flags)
    return ok


class ReadAsQpi(torch.nn.Module):
    """A verifier trained on Q^{BoK}, read as Q^pi = 1 - (1 - Q^{BoK})^(1/K), so that pav.verifier_report applies."""

    def __init__(self, verifier, k):
        super().__init__()
        self.verifier, self.k = verifier, k

    def forward(self, ids, mask, pos, pos_mask):
        q_bok = torch.sigmoid(self.verifier(ids, mask, pos, pos_mask).float())
        return torch.logit(1 - (1 - q_bok).clamp_min(1e-12) ** (1 / self.k), eps=1e-6)


def auc(score, positive):
    """P(score of a random positive > score of a random negative), ties counted half."""
    pos, neg = score[positive], score[~positive]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).float().mean() + 0.5 * (pos[:, None] == neg[None, :]).float().mean()
    return float(greater)


def main(argv=None):
    b = pav.parse_config(Bench, argv)
    targets = b.targets.split(",")
    if bad := [t for t in targets if t not in ("mc", "exact_q", "all_correct") and not bok_of(t)]:
        pav.fail(f"unknown --targets {bad}; choose from mc, exact_q, all_correct, mc_boK, exact_boK")
    if min(b.problems, b.n_mc, b.steps, b.batch) < 1:
        pav.fail("--problems, --n-mc, --steps and --batch must be positive")
    if too_big := [t for t in targets if t.startswith("mc_bo") and bok_of(t) > b.n_mc]:
        pav.fail(f"--targets {too_big}: the unbiased BoK estimate needs K <= --n-mc ({b.n_mc})")
    if b.threads:
        torch.set_num_threads(b.threads)
    cfg = pav.Config(task="arith", seed=b.seed, n_mc=b.n_mc, verifier_steps=b.steps, verifier_batch=b.batch)
    pav.check_config(cfg)
    device, _ = pav.pick_device()
    task = pav.make_task(cfg)
    model, tokenizer = pav.load_or_build_policy(task, cfg, device)
    table = data.step_end_table(tokenizer, task.delimiter)
    pav.seed_everything(b.seed)

    t0 = time.time()
    problems = task.problems(b.problems, random.Random(30_000 + b.seed))
    g = pav.generator("labels", b.seed)
    index, prompts, responses = pav.seed_rollouts(model, task, tokenizer, problems, 1, cfg, g)
    counts, labelled = pav.collect_labels(model, task, tokenizer, problems, index, responses, b.n_mc, cfg, g)
    print(f"labelled {int(labelled.sum())} prefixes of {len(responses)} responses ({time.time() - t0:.0f}s)")
    ok = flag_table(task, problems, index, responses, table, labelled.shape[1])
    mc = counts / b.n_mc
    depth_q = torch.stack([mc[labelled[:, h] & (ok[:, h] > 0), h].mean() for h in range(mc.shape[1])]).nan_to_num()
    made = {"mc": mc, "exact_q": ok * depth_q, "all_correct": ok}
    for name in targets:
        if name.startswith("mc_bo"):
            made[name] = pav.bok_unbiased(counts, b.n_mc, bok_of(name))
        elif name.startswith("exact_bo"):
            made[name] = ok * pav.bok_closed(depth_q, bok_of(name))
    print("exact_q by depth (all lines so far correct): " + " ".join(f"{q:.3f}" for q in depth_q.tolist()))

    # held-out: pav.py's own Monte Carlo labels (computed and cached on the first call)
    ho_problems = task.problems(cfg.eval_verifier_problems, random.Random(40_000 + b.seed), split="test")
    results, held_out = {}, None
    for name in targets:
        pav.seed_everything(b.seed)
        verifier = pav.Verifier(copy.deepcopy(model), cfg.verifier_layers).to(device)
        t1 = time.time()
        pav.train_verifier(verifier, tokenizer, prompts, responses, made[name], labelled, table, cfg, desc=name)
        scored = ReadAsQpi(verifier, bok_of(name)) if bok_of(name) else verifier
        report = pav.verifier_report(model, {"orm": scored, "pqm": scored}, task, tokenizer, cfg, device)
        if held_out is None:   # the report has just made (or read) the held-out labels
            held_out = torch.load(os.path.join(cfg.out, "held_out_labels.pt"))
            ho_ok = flag_table(task, ho_problems, held_out["index"], held_out["responses"], table,
                               held_out["m"].shape[1]) > 0
        q, m = pav.predict_q(scored, tokenizer, held_out["prompts"], held_out["responses"], table)
        keep = m & held_out["m"]
        keep[:, 0] = False                                                # the bare problem is always "correct"
        results[name] = {"pqm_mae": report["pqm_mae"], "pqm_adv_corr": report["pqm"]["adv_corr"],
                         "pav_adv_corr": report["pav_adv_corr"], "all_correct_auc": auc(q[keep], ho_ok[keep]),
                         "seconds": round(time.time() - t1)}
        print(f"{name:>12}: " + " | ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                           for k, v in results[name].items()), flush=True)
    out = {"config": dataclasses.asdict(b), "exact_q_by_depth": depth_q.tolist(), "results": results}
    path = os.path.join(cfg.out, "verifier_targets.json")
    json.dump(out, open(path, "w"), indent=1)
    print(f"saved {path}")
    print(json.dumps({k: v["pqm_mae"] for k, v in results.items()}))


if __name__ == "__main__":
    main()
