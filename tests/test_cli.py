"""`python pav.py` as a user runs it: a tiny end-to-end run, bad input, --help."""

import dataclasses
import json
import math
import os
import re
import subprocess
import sys

import pytest
import torch

import data
import pav
from benchmarks import prover_table
from conftest import ROOT, bigram_llama

SCRIPT = os.path.join(ROOT, "pav.py")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(torch.get_num_threads())}
# A tiny budget: a 1-layer, 32-wide policy; verifiers on 16 seed rollouts labelled with 8 rollouts per prefix, trained
# for 5 steps (and, by `tiny_table`, a prover table and a report of 16 states or problems).
TINY = ["--task", "planted", "--d-model", "32", "--n-layers", "1", "--eval-problems", "64", "--n-mc", "8",
        "--n-problems", "16", "--verifier-steps", "5"]


@pytest.fixture
def tiny_table(monkeypatch):
    for name, value in [("TABLE_STATES", 16), ("TABLE_ACTIONS", 2), ("TABLE_MC", 16), ("PROVER_KS", (1, 2, 4)),
                        ("TABLE_GAMMAS", (5, 10))]:
        monkeypatch.setattr(prover_table, name, value)
    for name, value in [("REPORT_PROBLEMS", 16), ("REPORT_MC", 8)]:
        monkeypatch.setattr(pav, name, value)


def run(args, cwd):
    """Run pav.py from `cwd` (a temporary directory, so a default runs/ could never land in the repo)."""
    return subprocess.run([sys.executable, SCRIPT, *args], cwd=cwd, env=ENV, capture_output=True, text=True,
                          timeout=600)


def finite(x):
    return isinstance(x, float) and math.isfinite(x)


def cached_in(stdout, verb):
    """The verifier directory a run printed: 'training verifiers orm, pqm (cached in DIR)' or 'loading verifiers from
    DIR'."""
    pattern = r"training verifiers orm, pqm \(cached in (.+)\)$" if verb == "training" else r"loading verifiers from (.+)$"
    found = [m.group(1) for m in (re.match(pattern, l) for l in stdout.splitlines()) if m]
    assert len(found) == 1, stdout
    return found[0]


@pytest.mark.slow
def test_planted_end_to_end_builds_then_reloads_and_repeats(tmp_path, tiny_table, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)                            # a default runs/ would land here, not in the repository
    out = tmp_path / "out"
    pav.main(TINY + ["--out", str(out)])
    first = capsys.readouterr().out
    first_report = json.loads((out / "verifiers.json").read_text())
    pav.main(TINY + ["--out", str(out)])
    second = capsys.readouterr().out
    assert "building the base policy" in first and "loading the base policy" in second
    assert first.splitlines()[0].startswith("device cpu | dtype torch.float32 | task planted")
    assert first_report["eval_samples"] == 64 * 8 and 0.0 <= first_report["base_accuracy"] <= 1.0
    assert (out / "seed0" / "policy" / "settings.json").exists() and not (tmp_path / "runs").exists()
    # the same numbers whether the policy was just built or loaded: every draw has a random stream of its own
    table = lambda s: [l for l in s.splitlines() if "|" in l and not l.startswith("device")]
    assert table(first) == table(second)
    assert first.split("base policy accuracy")[1].split("\n")[0] == second.split("base policy accuracy")[1].split("\n")[0]

    # Theorem 3.1's prover table (benchmarks/prover_table.py) on the same cached policy, twice: the same numbers
    tables = []
    for _ in range(2):
        prover_table.main(TINY + ["--out", str(out)])
        tables.append(capsys.readouterr().out)
    assert "loading the base policy" in tables[0] and "16 states x 2 actions x 16 rollouts" in tables[0]
    lines = tables[0].splitlines()
    head = next(i for i, l in enumerate(lines) if re.match(r"\s*prover \| +distinguishability \| +alignment \|", l))
    names = [l.split("|")[0].strip() for l in lines[head + 1:head + 6]]
    assert names == ["pi", "Bo2(pi)", "Bo4(pi)", "gamma=5", "gamma=10"]
    assert table(tables[0])[1:] == table(tables[1])[1:]                   # the timing line aside
    report = json.loads((out / "provers.json").read_text())
    assert report["task"] == "planted" and [r["prover"] for r in report["provers"]] == names
    for r in report["provers"]:
        for key in ("distinguishability", "distinguishability_se", "alignment", "alignment_se", "mean_q"):
            assert finite(r[key]), (r, key)
        assert 0.0 <= r["mean_q"] <= 1.0
    assert report["config"]["n_mc"] == 8 and report["config"]["out"] == str(out)

    # verifiers: trained on the first run, loaded on the second, the same report from both
    trained = cached_in(first, "training")
    assert cached_in(second, "loading") == trained and "training verifiers" not in second
    assert os.path.dirname(trained) == str(out / "seed0" / "verifiers")
    for name in ("orm", "pqm"):
        assert (out / "seed0" / "verifiers" / os.path.basename(trained) / name / "head.pt").exists()
    report = json.loads((out / "verifiers.json").read_text())
    assert report == first_report
    for key in ("orm", "pqm", "pav", "held_out", "config"):
        assert key in report, key
    for name in ("orm", "pqm", "pav"):
        assert all(finite(report[name][k]) for k in ("bce", "mae", "adv_corr")), report[name]
        assert 0 <= report[name]["mae"] <= 1 and report[name]["bce"] >= 0 and -1 <= report[name]["adv_corr"] <= 1
    assert report["held_out"]["problems"] == 16 and report["held_out"]["rollouts_per_prefix"] == 8
    assert report["held_out"]["prefixes"] >= 16 and report["config"]["verifier_steps"] == 5

    # a changed verifier setting trains new verifiers in a new directory, and reuses the base policy
    pav.main(TINY + ["--out", str(out), "--verifier-steps", "6"])
    third = capsys.readouterr().out
    assert "loading the base policy" in third and "loading verifiers" not in third
    retrained = cached_in(third, "training")
    assert retrained != trained and os.path.dirname(retrained) == str(out / "seed0" / "verifiers")
    assert json.loads((out / "seed0" / "verifiers" / os.path.basename(retrained) / "settings.json").read_text())[
        "verifier_steps"] == 6

    # --explain: one response, step by step, and its plot
    pav.main(TINY + ["--out", str(out), "--explain"])
    explained = capsys.readouterr().out
    assert re.search(r"^ *1 \| .* \| +[0-9.]+ +[0-9.]+ \| +[0-9.]+ +[0-9.]+ \| +[-+][0-9.]+ +[-+][0-9.]+ \| [-+][0-9.]+$",
                     explained, re.M), explained
    assert (out / "explain.png").read_bytes().startswith(b"\x89PNG")


BAD = [
    (["--task", "chess"], "unknown task 'chess'"),
    (["--n-mc", "0"], "--n-mc must be a positive"),
    (["--n-mc", "-3"], "--n-mc must be a positive"),
    (["--n-mc", "abc"], "argument --n-mc: invalid int value: 'abc'"),
    (["--alpha", "abc"], "argument --alpha: invalid float value: 'abc'"),
    (["--alpha", "-1"], "--alpha must be a non-negative finite number, got -1.0"),
    (["--alpha", "nan"], "--alpha must be a non-negative finite number, got nan"),
    (["--alpha", "inf"], "--alpha must be a non-negative finite number, got inf"),
    (["--prover", "bo0"], "--prover 'bo0' must be boK"),
    (["--prover", "/nonexistent/dir"], "--prover '/nonexistent/dir' must be boK"),
    (["--n-problems", "0"], "--n-problems must be a positive"),
    (["--verifier-steps", "0"], "--verifier-steps must be a positive"),
    (["--d-model", "0"], "--d-model must be a positive"),
    (["--eval-problems", "0"], "--eval-problems must be a positive"),
    (["--batch-rows", "0"], "--batch-rows must be a positive"),
    (["--micro-batch-size=-1"], "--micro-batch-size must be a non-negative"),
    (["--max-new-tokens", "0"], "--max-new-tokens must be a positive"),
    (["--model", "/nonexistent/model"], "/nonexistent/model is not a model directory: no such folder"),
    (["--eval-data", "x.jsonl"], "--eval-data needs --data"),
    (["--data", "x.jsonl"], "--data needs --model"),
    (["--task", "planted", "--model", "/nonexistent/model"], "planted is defined over its own 15 tokens"),
    (["--verifier-model", "/nonexistent/model"], "/nonexistent/model is not a model directory"),
    (["--temperature", "inf"], "unrecognized arguments: --temperature"),
]


@pytest.mark.parametrize("args,message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_fails_with_one_line(args, message, tmp_path, monkeypatch, capsys):
    """In-process (no interpreter start-up per case): exit code 2, one 'error:' line, nothing built."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit:
        pav.main(args + ["--out", str(tmp_path / "out")])
    out, err = capsys.readouterr()
    assert exit.value.code == 2
    assert err.endswith("\n") and len(err.splitlines()) == 1 and err.startswith("error: ") and message in err, err
    assert out == ""                                       # not even the device line: nothing was set up
    assert not (tmp_path / "out").exists() and not (tmp_path / "runs").exists()


@pytest.mark.slow
@pytest.mark.parametrize("args,stderr", [
    (["--task", "chess"], "error: unknown task 'chess'; choose from facts, arith, planted\n"),
    (["--alpha", "abc"], "error: argument --alpha: invalid float value: 'abc'\n"),   # argparse's own error
    (["--model", "/no/such/folder"], "error: /no/such/folder is not a model directory: no such folder (and no model "
                                     "hub is reachable: HF_HUB_OFFLINE=1)\n"),
], ids=["task chess", "alpha abc", "model missing"])
def test_bad_input_as_a_process(args, stderr, tmp_path):
    """The same through a real interpreter: no warning, usage block or traceback joins the one line, and nothing was
    built or written first (the seconds it takes are measured outside the suite, not asserted)."""
    res = run(args + ["--out", str(tmp_path / "out")], tmp_path)
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr == stderr
    assert not (tmp_path / "out").exists()


def test_each_task_has_its_own_output_directory_and_policy():
    cfgs = {name: pav.Config(task=name) for name in ("facts", "arith", "planted")}
    for name, cfg in cfgs.items():
        pav.check_config(cfg)
        assert cfg.out == os.path.join("runs", name) and pav.make_task(cfg).name == name
    settings = [json.dumps(pav.policy_settings(pav.make_task(c), c), sort_keys=True) for c in cfgs.values()]
    assert len(set(settings)) == 3
    # by default every verifier starts from the policy's own weights: it knows no more of the task than the policy
    assert all(c.verifier_model == "policy" and pav.verifier_backbone(c) == "" for c in cfgs.values())
    teacher = pav.Config(verifier_model="clean")                # the upper bound, one flag away
    pav.check_config(teacher)
    assert pav.verifier_backbone(teacher) == os.path.join("runs", "facts", "seed0", "policy", "clean")
    planted_teacher = pav.Config(task="planted", verifier_model="clean")
    pav.check_config(planted_teacher)                           # planted has no clean warm start: the policy's own
    assert planted_teacher.verifier_model == "policy"
    assert pav.verifier_backbone(pav.Config(verifier_model="some/dir")) == "some/dir"
    seeded = pav.Config(seed=2)
    pav.check_config(seeded)
    assert pav.seed_dir(seeded) == os.path.join("runs", "facts", "seed2")


@pytest.mark.slow
def test_help_lists_every_config_field_with_its_default(tmp_path):
    res = run(["--help"], tmp_path)
    assert res.returncode == 0 and res.stderr == ""
    text = " ".join(res.stdout.split())                   # undo argparse's line wrapping
    fields = [f for f in dataclasses.fields(pav.PavConfig) if f.metadata["help"] is not None]
    flags = ["--" + f.name.replace("_", "-") for f in fields]
    starts = []
    for flag in flags:                                     # "  --n-mc N_MC  help", or "  --flag, --no-flag  help"
        m = re.search(rf"\s{flag}( [A-Z_]+ |, --no-)", text)         # where the flag is defined, not mentioned
        assert m, flag
        starts.append(m.start())
    assert starts == sorted(starts)
    for f, flag, a, b in zip(fields, flags, starts, starts[1:] + [len(text)]):
        entry = text[a:b]
        squeezed = "".join(entry.split())                  # argparse also breaks lines after hyphens
        assert f"(default:{f.default})" in squeezed, (flag, entry)
        assert "".join(f.metadata["help"].split()) in squeezed, (flag, entry)


def two_way_bigram(planted):
    """A policy on planted whose Q-values are known: BOS -> 3; 3 -> 6 or 5, half each; 6 -> 0; 0 -> 3; 5 -> EOS.
    Its responses are 3 (6 0 3)^j 5 (success iff j >= 1: then they hold 3 6 0 3 5) or run into the 10-token limit."""
    tok, eos = planted.tokenizer, planted.tokenizer.eos_token_id
    model = bigram_llama(len(tok), {tok.bos_token_id: 3, 6: 0, 0: 3, 5: eos})
    with torch.no_grad():
        model.lm_head.weight[5, 3] = model.lm_head.weight[6, 3] = 60.0          # 3 -> 5 or 6, equal logits
    return model


def brute_force_q(planted, prefix):
    """Exact Q^pi of a response prefix under `two_way_bigram`, by enumerating every continuation."""
    eos, H = planted.tokenizer.eos_token_id, planted.max_new_tokens
    if eos in prefix or len(prefix) == H:
        done = prefix[:prefix.index(eos)] if eos in prefix else prefix
        return planted.check(data.Problem("", planted.answer), planted.tokenizer.decode(done))
    nxt = {3: [(5, 0.5), (6, 0.5)], 6: [(0, 1.0)], 0: [(3, 1.0)], 5: [(eos, 1.0)]}[prefix[-1]] if prefix else [(3, 1.0)]
    return sum(p * brute_force_q(planted, prefix + [a]) for a, p in nxt)


def test_report_labels_match_brute_force_q_and_bok(tmp_path, monkeypatch, capsys):
    """End to end through pav.py: the held-out Monte Carlo labels the report scores against are Q^pi of the policy
    being reported on, at each prefix of its own rollouts, and Q^mu = BoK(pi) of them; checked against Q computed by
    enumerating every continuation (the bare problem: 0.5 * (1 - 0.5^2) = 0.375) and the base accuracy likewise."""
    planted = data.Planted()
    model = two_way_bigram(planted)
    monkeypatch.setattr(pav, "load_or_build_policy", lambda task, cfg, device: (model, task.tokenizer))
    monkeypatch.setattr(pav, "REPORT_PROBLEMS", 16)
    monkeypatch.setattr(pav, "REPORT_MC", 256)
    out = tmp_path / "out"
    pav.main(["--task", "planted", "--out", str(out), "--n-problems", "8", "--n-mc", "4", "--verifier-steps", "2",
              "--eval-problems", "64"])
    report = json.loads((out / "verifiers.json").read_text())
    assert brute_force_q(planted, []) == 0.375
    n = report["eval_samples"]
    assert n == 512 and abs(report["base_accuracy"] - 0.375) < 4 * math.sqrt(0.375 * 0.625 / n)
    held = torch.load(out / "seed0" / "held_out_labels.pt", weights_only=True)
    exact, mc = [], []
    for y, counts, labelled in zip(held["responses"], held["counts"], held["labelled"]):
        cuts = pav.step_cuts(y, data.step_end_table(planted.tokenizer, None))
        assert int(labelled.sum()) == len(cuts)
        exact += [brute_force_q(planted, y[:c]) for c in cuts]
        mc += counts[:len(cuts)].tolist()
    exact, mc = torch.tensor(exact, dtype=torch.float64), torch.tensor(mc, dtype=torch.float64)
    assert {round(q, 4) for q in exact.tolist()} >= {0.375, 0.75, 1.0, 0.0}   # prefixes of every kind were labelled
    se = (exact * (1 - exact) / 256).sqrt()
    assert ((mc / 256 - exact).abs() <= 5 * se + 1e-9).all()                  # Q^pi, prefix by prefix
    K = 4                                                                      # Q^mu of Bo4(pi), unbiased from the counts
    mu = pav.bok_unbiased(mc, 256, K).double()
    mu_exact = 1 - (1 - exact) ** K
    slope = K * (1 - exact) ** (K - 1)                                        # d Q^mu / d Q^pi: the delta method
    assert ((mu - mu_exact).abs() <= 5 * slope * se + 0.01).all() and abs(float((mu - mu_exact).mean())) < 0.02
    assert report["held_out"] == {"problems": 16, "prefixes": len(exact), "rollouts_per_prefix": 256}
