"""benchmarks/: every script end to end on a tiny configuration (seconds), so that a rename in the pipeline cannot
silently break one; a tiny random Llama stands in for the cached base policy."""

import dataclasses
import json
import re

import pytest
import torch

import pav
from benchmarks import prover_table, rollouts, verifier_ablation, warm_start
from conftest import tiny_llama

PLANTED = ["--task", "planted", "--d-model", "32", "--n-layers", "1"]


@pytest.fixture
def tiny_policy(monkeypatch):
    """load_or_build_policy returns a 1-layer, 32-wide random Llama instead of building the task's base policy."""
    monkeypatch.setattr(pav, "load_or_build_policy", lambda task, cfg, device: (
        tiny_llama(len(task.tokenizer), hidden=32, layers=1).to(device), task.tokenizer))


def test_count_valid_by_hand():
    """generate's tokens that count: up to and including each row's first EOS (14), at most the row's own budget."""
    new = torch.tensor([[1, 14, 3, 3], [2, 3, 4, 5], [14, 2, 2, 2], [1, 2, 14, 2]])
    assert rollouts.count_valid(new, 14, torch.tensor([4, 3, 4, 2])) == 2 + 3 + 1 + 2


def test_rollouts_benchmark(tiny_policy, tmp_path, capsys):
    rollouts.main(["--task", "planted", "--batch", "8", "--n-responses", "4", "--n-mc", "2", "--repeats", "1",
                   "--out", str(tmp_path)])
    report = json.loads((tmp_path / "benchmark.json").read_text())
    assert report["sampling_ratio"] > 0 and report["labelling_ratio"] > 0
    sampling = [r for r in report["rows"] if r["workload"] == "sampling"]
    assert [r["method"] for r in sampling] == ["ours", "generate"]
    assert all(0 < r["tokens"] <= 8 * 10 for r in sampling)                # 8 prompts, 10 tokens at most each
    assert capsys.readouterr().out.strip().splitlines()[-1] == json.dumps(report)


def test_prover_table_benchmark(tiny_policy, tmp_path, monkeypatch, capsys):
    for name, value in [("TABLE_STATES", 8), ("TABLE_ACTIONS", 2), ("TABLE_MC", 8), ("PROVER_KS", (1, 4)),
                        ("TABLE_GAMMAS", (10,))]:
        monkeypatch.setattr(prover_table, name, value)
    prover_table.main(PLANTED + ["--out", str(tmp_path)])
    report = json.loads((tmp_path / "provers.json").read_text())
    assert [r["prover"] for r in report["provers"]] == ["pi", "Bo4(pi)", "gamma=10"]
    assert all(0.0 <= r["mean_q"] <= 1.0 for r in report["provers"])
    assert "8 states x 2 actions x 8 rollouts" in capsys.readouterr().out


def test_prover_table_on_track_keeps_only_states_whose_lines_are_right(facts, monkeypatch):
    """on_track: the states rolled out from (the first call to mc_successes) are all on track, and some are not the
    bare problem; without the filter, a random policy's states are mostly off track."""
    for name, value in [("TABLE_ACTIONS", 2), ("TABLE_MC", 4), ("PROVER_KS", (1, 2))]:
        monkeypatch.setattr(prover_table, name, value)
    model, tok = tiny_llama(len(facts.tokenizer), hidden=32, layers=1, seed=4), facts.tokenizer
    # seed rollouts: the right solution, with a wrong line "9+9=9" after its first 0-3 lines in every other one
    seen = []
    monkeypatch.setattr(pav, "mc_successes", lambda m, t, tk, problems, prefixes, *a, **k: seen.append(
        [(problems[i], tk.decode(p)) for i, p in prefixes]) or torch.zeros(len(prefixes)))
    cfg = pav.PavConfig(task="facts")
    right = lambda p: facts.solution(p.prompt[2:-1], 0.0, None)
    monkeypatch.setattr(pav, "rollout_responses", lambda m, t, tk, problems, *a, **k: [
        tk.encode(right(p)[:6 * (i % 4)] + ("9+9=9\n" if i % 2 else "")) + tk.encode(right(p)[6 * (i % 4):])
        for i, p in enumerate(problems)])
    prover_table.prover_table(model, facts, tok, cfg, n_states=8, on_track=True)
    kept = seen[0]
    assert len(kept) == 8 and all(facts.on_track(p, text) for p, text in kept)
    assert any(text for _, text in kept)                                  # not only bare problems
    seen.clear()
    prover_table.prover_table(model, facts, tok, cfg, n_states=16)
    assert not all(facts.on_track(p, text) for p, text in seen[0])


def test_verifier_ablation_benchmark_reads_what_pav_py_caches(tiny_policy, tmp_path, monkeypatch, capsys):
    """pav.py first (labels, verifiers, held-out labels), then the ablation on its caches: one row per variant."""
    monkeypatch.setattr(pav, "REPORT_PROBLEMS", 8)
    monkeypatch.setattr(pav, "REPORT_MC", 4)
    argv = PLANTED + ["--out", str(tmp_path), "--eval-problems", "8", "--n-problems", "8", "--n-mc", "4",
                      "--verifier-steps", "2"]
    pav.main(argv)
    capsys.readouterr()
    verifier_ablation.main(argv)
    rows = [l for l in capsys.readouterr().out.splitlines() if re.match(r"\s*(plain head|\+ top|all )", l)]
    assert [l.split("|")[0].strip() for l in rows] == list(verifier_ablation.VARIANTS)
    for line in rows:
        mae = float(line.split("|")[1])
        assert 0.0 <= mae <= 1.0


def test_warm_start_benchmark(monkeypatch, capsys):
    """50 steps of a 32-wide policy on one-operation problems, from each initialisation."""
    config = pav.policy_config
    monkeypatch.setattr(pav, "policy_config", lambda tok, cfg: config(tok, dataclasses.replace(cfg, d_model=32,
                                                                                              n_layers=1)))
    monkeypatch.setattr(pav, "SFT_BATCH", 8)
    warm_start.main(["--n-ops", "1", "--seeds", "1", "--max-steps", "50"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert [re.sub(r"after (>50|50) steps \(\d+s", "after N steps (Ts", l) for l in lines] == [
        f"initializer_range {init}: learned after N steps (Ts each on average)" for init in (0.02, 0.06)]
