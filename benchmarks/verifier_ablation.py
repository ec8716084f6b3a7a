"""Which of the verifier's additions earn their place: the PQM trained with each switched off, on the same labels.

    python benchmarks/verifier_ablation.py              # the default task's cached policy, labels and held-out labels
    python benchmarks/verifier_ablation.py --task arith

Run `python pav.py` (same flags) first: it caches the policy, the training labels and the held-out Monte Carlo labels
that this script reads. For each variant of `pav.Verifier` (the paper's plain head on the frozen backbone, then each
addition) it trains a PQM exactly as pav.py does and prints its held-out mean absolute error against Monte Carlo Q^pi
and the correlation of its Bo4 advantages with the Monte Carlo ones (what RL and search use).
"""

import copy
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch

import data
import pav

VARIANTS = {   # name: (top_layers, surprise, survival, tokens)
    "plain head": (0, False, False, False),
    "+ top layer": (1, False, False, False),
    "+ top layer + surprise": (1, True, False, False),
    "+ top layer + survival": (1, False, True, False),
    "all but tokens": (1, True, True, False),
    "all four (pav.py)": (1, True, True, True),
}


def main(argv=None):
    cfg, device, task, model, tokenizer = pav.setup(pav.PavConfig, argv)
    labels_path = pav.labels_path(cfg)
    held_path = os.path.join(pav.seed_dir(cfg), "held_out_labels.pt")
    if not os.path.exists(labels_path) or not os.path.exists(held_path):
        pav.fail(f"no cached labels under {pav.seed_dir(cfg)}: run `python pav.py` with the same flags first")
    saved = pav.load_tensors(labels_path, "delete it")
    problems = task.problems(cfg.n_problems, pav.rng("labels", cfg.seed))
    prompts = [data.prompt_ids(tokenizer, p) for p in problems]
    table = data.step_end_table(tokenizer, task.delimiter)
    held = pav.load_tensors(held_path, "delete it")
    held_problems = task.problems(pav.REPORT_PROBLEMS, pav.rng("held-out labels", cfg.seed), split="test")
    held_prompts = [data.prompt_ids(tokenizer, p) for p in held_problems]
    q_mc, K = held["counts"] / pav.REPORT_MC, pav.prover_k(cfg)
    mu_mc = pav.bok_unbiased(held["counts"], pav.REPORT_MC, K)
    backbone = pav.load_lm(pav.verifier_backbone(cfg)) if pav.verifier_backbone(cfg) else model
    print(f"{'verifier':>24} | held-out MAE of Q^pi | Bo{K} advantage correlation | seconds")
    for name, switches in VARIANTS.items():
        t0 = time.time()
        torch.manual_seed(pav.stream_seed("verifier", cfg.seed))
        v = pav.Verifier(copy.deepcopy(backbone), *switches).to(device)
        v = pav.train_verifier(v, tokenizer, prompts, saved["responses"], saved["counts"] / cfg.n_mc,
                               saved["labelled"], table, cfg, desc=name)
        q, m = pav.predict_q(v, tokenizer, held_prompts, held["responses"], table, cfg.micro_batch_size or 256)
        m = m & held["labelled"][:, :m.shape[1]]
        mae = float((q - q_mc[:, :q.shape[1]])[m].abs().mean())
        m_adv = m[:, 1:] & m[:, :-1]
        x = pav.advantages(pav.bok_closed(q, K))[m_adv]
        y = pav.advantages(mu_mc[:, :q.shape[1]])[m_adv]
        x, y = x - x.mean(), y - y.mean()
        corr = float((x * y).sum() / (x.norm() * y.norm()))
        print(f"{name:>24} | {mae:20.4f} | {corr:27.3f} | {time.time() - t0:7.0f}", flush=True)


if __name__ == "__main__":
    main()
