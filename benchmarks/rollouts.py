"""Benchmark our rollout engine (`pav.sample`) against Hugging Face `model.generate` on the same work.

    python benchmarks/rollouts.py                  # CPU, a few minutes: the arith base policy, both workloads
    python benchmarks/rollouts.py --threads 1      # on a shared machine: one thread is far less sensitive to other jobs
    python benchmarks/rollouts.py --repeats 5      # steadier medians

Two workloads, each run by both methods in one process with the same model object, the same prompts or prefixes,
temperature 1 and the same length budget:
1. sampling: one whole response to each of `--batch` held-out prompts;
2. labelling: Monte Carlo labelling of every unfinished prefix (the state before step 1 and after each step but the
   last) of `--n-responses` sampled responses with `--n-mc` rollouts each. Ours branches each prefix's KV cache n
   times in one `pav.sample` call; `generate` takes all prefixes in one left-padded call with
   `num_return_sequences = n_mc`, so it encodes each prefix n times.

It prints a table (workload, method, sampled tokens, seconds, tokens/s) and the ratios ours / generate; its last line
is a JSON object with `sampling_ratio` and `labelling_ratio`, also saved to `<out>/benchmark.json`.

How the comparison is kept fair:
1. Sampled tokens are the tokens of each row up to and including its EOS, and at most the row's own budget.
   `generate` takes one `max_new_tokens` for the whole batch (the largest remaining budget); whatever it samples
   past a row's budget or EOS is computed but not counted, because that work is not needed.
2. `generate` samples plainly: do_sample, temperature 1, top_k 0 and top_p 1 (no truncation), under no_grad.
3. Both methods are warmed up once (on a slice of the workload); each measurement is repeated `--repeats` times,
   ours and generate interleaved (alternating which goes first), and the median tokens/s is reported, along with the
   ratio of each repeat's adjacent pair.
4. Other processes on the machine distort everything: with 2 threads on 2 busy cores both methods slow down up to
   20x and erratically. The first line prints the load average; compare only ratios from one quiet run.
"""

import dataclasses
import json
import os
import random
import statistics
import sys
import time
from dataclasses import dataclass

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # run from the repo root

import torch

import data
import pav
from pav import arg


# --------------------------------------------------------------------------------------------------------------
# Config

@dataclass
class Bench:
    task: str = arg("arith", "planted or arith; the task's cached base policy is benchmarked")
    seed: int = arg(0, "seed of the sampling (the base policy is the default one, built with seed 0)")
    repeats: int = arg(3, "timed repeats of each measurement; the median is reported", "positive")
    batch: int = arg(256, "sampling workload: held-out prompts, one response each", "positive")
    n_responses: int = arg(64, "labelling workload: responses whose every unfinished prefix is labelled", "positive")
    n_mc: int = arg(16, "labelling workload: Monte Carlo rollouts per prefix", "positive")
    threads: int = arg(0, "torch CPU threads; 0 keeps torch's default", "non-negative")
    out: str = arg("", "where the base policy is cached and benchmark.json is saved; empty: runs/<task>")


# --------------------------------------------------------------------------------------------------------------
# The two methods on one batch of prefixes: each returns the number of sampled tokens

def ours(model, tok, prefixes, n, budgets):
    r = pav.sample(model, prefixes, n=n, max_new_tokens=budgets, eos_id=tok.eos_token_id, pad_id=tok.pad_token_id,
                   temperature=1.0)
    return int(r.mask.sum())


def hf_generate(model, tok, prefixes, n, budgets):
    device = next(model.parameters()).device
    ids, mask = (t.to(device) for t in pav.pad_rows(prefixes, tok.pad_token_id, left=True))   # (B, P)
    out = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                         max_new_tokens=max(budgets), num_return_sequences=n, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id)
    new = out[:, ids.shape[1]:]                                           # (B * n, T) sampled tokens
    return count_valid(new, tok.eos_token_id, torch.tensor(budgets).repeat_interleave(n))


def count_valid(new, eos_id, budget):
    """Tokens up to and including each row's first EOS, capped at the row's own budget. new (N, T), budget (N,)."""
    is_eos = new == eos_id                                                # (N, T)
    first = torch.where(is_eos.any(-1), is_eos.int().argmax(-1) + 1, new.shape[1])   # (N,) length up to EOS
    return int(torch.minimum(first, budget.to(first.device)).sum())


def timed(fn, *args):
    t0 = time.perf_counter()
    with torch.no_grad():
        n_tokens = fn(*args)
    return n_tokens, time.perf_counter() - t0


def compare(name, model, tok, prefixes, n, budgets, repeats, seed):
    """Warm up both methods, then time them `repeats` times interleaved. Returns one result row per method and the
    ratios ours / generate (tokens/s): of the medians, and of each repeat's pair of adjacent runs."""
    methods = {"ours": ours, "generate": hf_generate}
    for fn in methods.values():
        with torch.no_grad():
            fn(model, tok, prefixes[:64], n, budgets[:64])
    runs = {m: [] for m in methods}
    for r in range(repeats):
        for m in (list(methods) if r % 2 == 0 else list(reversed(methods))):
            torch.manual_seed(seed + r)
            runs[m].append(timed(methods[m], model, tok, prefixes, n, budgets))
    rows = [{"workload": name, "method": m, "tokens": statistics.median(k for k, _ in res),
             "seconds": statistics.median(s for _, s in res), "tokens_per_s": statistics.median(k / s for k, s in res),
             "all_seconds": [round(s, 3) for _, s in res], "all_tokens": [k for k, _ in res]} for m, res in runs.items()]
    ratio = rows[0]["tokens_per_s"] / rows[1]["tokens_per_s"]
    pairs = [round((ko / so) / (kg / sg), 3) for (ko, so), (kg, sg) in zip(runs["ours"], runs["generate"])]
    return rows, ratio, pairs


# --------------------------------------------------------------------------------------------------------------

def main(argv=None):
    # Setup: the default base policy of the task, and the two workloads
    bench = pav.parse_config(Bench, argv)
    if bench.threads:
        torch.set_num_threads(bench.threads)
    cfg = pav.Config(task=bench.task, out=bench.out)
    pav.check_config(cfg)
    device, dtype = pav.pick_device()
    load = os.getloadavg()[0]
    print(f"device {device} | dtype {dtype} | task {cfg.task} | seed {bench.seed} | threads {torch.get_num_threads()} | "
          f"cores {os.cpu_count()} | load average {load:.1f} | torch {torch.__version__}")
    if load > 0.5:
        print(f"warning: other processes are running (load {load:.1f}); timings will be slow and noisy")
    task = data.get_task(cfg.task)
    model, tok = pav.load_or_build_policy(task, cfg, device)
    T = task.max_new_tokens

    # Workload 1: one whole response to each held-out prompt.
    problems = pav.eval_problems(task, dataclasses.replace(cfg, eval_problems=bench.batch))[:bench.batch]
    prompts = [data.prompt_ids(tok, p) for p in problems]

    # Workload 2: every unfinished prefix of n_responses responses sampled by the policy, with its remaining budget.
    resp_problems = task.problems(bench.n_responses, random.Random(30_000 + bench.seed))
    responses = pav.rollout_responses(model, task, tok, resp_problems, [(i, []) for i in range(bench.n_responses)], 1,
                                      cfg, generator=torch.Generator(device).manual_seed(bench.seed))
    table = data.step_end_table(tok, task.delimiter)
    states = [(i, y[:c]) for i, y in enumerate(responses) for c in pav.step_cuts(y, table)[:-1]
              if not data.is_complete(y[:c], task, tok)]
    state_prefixes = [data.prompt_ids(tok, resp_problems[i]) + p for i, p in states]
    state_budgets = [T - len(p) for _, p in states]
    print(f"sampling: {len(prompts)} prompts x 1, budget {T} | labelling: {len(states)} prefixes of "
          f"{bench.n_responses} responses x {bench.n_mc} rollouts = {len(states) * bench.n_mc} rows, "
          f"budgets {min(state_budgets)}..{max(state_budgets)}")

    # Measure
    rows, ratio, pairs = [], {}, {}
    for name, prefixes, n, budgets in (("sampling", prompts, 1, [T] * len(prompts)),
                                       ("labelling", state_prefixes, bench.n_mc, state_budgets)):
        r, ratio[name], pairs[name] = compare(name, model, tok, prefixes, n, budgets, bench.repeats, bench.seed)
        rows += r

    print(f"{'workload':>10} | {'method':>8} | {'tokens':>8} | {'seconds':>8} | {'tokens/s':>9} | seconds of each repeat")
    for r in rows:
        print(f"{r['workload']:>10} | {r['method']:>8} | {r['tokens']:>8.0f} | {r['seconds']:>8.3f} | "
              f"{r['tokens_per_s']:>9.0f} | {r['all_seconds']}")
    print(f"ours / generate within each repeat: sampling {pairs['sampling']} | labelling {pairs['labelling']}")
    print(f"ratio ours / generate (tokens/s): sampling {ratio['sampling']:.2f}x | labelling {ratio['labelling']:.2f}x")
    report = {"sampling_ratio": round(ratio["sampling"], 3), "labelling_ratio": round(ratio["labelling"], 3),
              "sampling_pair_ratios": pairs["sampling"], "labelling_pair_ratios": pairs["labelling"],
              "task": cfg.task, "device": str(device), "threads": torch.get_num_threads(), "load_average": round(load, 2),
              "labelling_prefixes": len(states), "config": dataclasses.asdict(bench),
              "rows": [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()} for r in rows]}
    path = os.path.join(cfg.out, "benchmark.json")
    data.save_json(report, path)
    print(f"saved {path}")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
