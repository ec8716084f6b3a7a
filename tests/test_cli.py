"""`python pav.py` as a user runs it: a tiny end-to-end run, bad input, --help."""

import dataclasses
import json
import math
import os
import re
import subprocess
import sys
import time

import pytest
import torch

import pav
from conftest import ROOT

SCRIPT = os.path.join(ROOT, "pav.py")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(torch.get_num_threads())}
# A tiny budget: a 1-layer, 32-wide policy, 16 states x 2 actions x 16 rollouts for the prover table; verifiers on
# 16 seed rollouts labelled with 8 rollouts per prefix, 5 training steps, reported on 16 held-out responses.
TINY = ["--task", "planted", "--d-model", "32", "--n-layers", "1", "--n-states", "16", "--n-actions", "2",
        "--table-mc", "16", "--ks", "1,2,4", "--gammas", "5,10", "--eval-problems", "64",
        "--n-mc", "8", "--n-problems", "16", "--n-cov", "1", "--verifier-steps", "5", "--verifier-batch", "8",
        "--eval-verifier-problems", "16", "--eval-mc", "8"]


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
def test_planted_end_to_end_builds_then_reloads_and_repeats(tmp_path):
    out = tmp_path / "out"
    first = run(TINY + ["--out", str(out)], tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    first_report = json.loads((out / "verifiers.json").read_text())
    second = run(TINY + ["--out", str(out)], tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "building the base policy" in first.stdout and "loading the base policy" in second.stdout
    assert first.stdout.splitlines()[0].startswith("device cpu | dtype torch.float32 | task planted")

    lines = first.stdout.splitlines()
    head = next(i for i, l in enumerate(lines) if re.match(r"\s*prover \| +distinguishability \| +alignment \|", l))
    names = [l.split("|")[0].strip() for l in lines[head + 1:head + 6]]
    assert names == ["pi", "Bo2(pi)", "Bo4(pi)", "gamma=5", "gamma=10"]

    report = json.loads((out / "provers.json").read_text())
    assert report["task"] == "planted" and report["eval_samples"] == 64 * 8
    assert 0.0 <= report["base_accuracy"] <= 1.0
    assert [r["prover"] for r in report["provers"]] == names
    for r in report["provers"]:
        for key in ("distinguishability", "distinguishability_se", "alignment", "alignment_se", "mean_q"):
            assert isinstance(r[key], float) and r[key] == r[key], (r, key)   # finite numbers, not NaN
        assert 0.0 <= r["mean_q"] <= 1.0
    assert report["config"]["table_mc"] == 16 and report["config"]["n_mc"] == 8
    assert report["config"]["out"] == str(out)
    assert "16 states x 2 actions x 16 rollouts" in first.stdout
    assert (out / "policy" / "settings.json").exists() and not (tmp_path / "runs").exists()
    # the same numbers whether the policy was just built or loaded (seeded, CPU)
    assert first.stdout.split("base policy accuracy")[1].split("prover table")[0] == \
        second.stdout.split("base policy accuracy")[1].split("prover table")[0]
    table = lambda s: [l for l in s.splitlines() if "|" in l and not l.startswith("device")]
    assert table(first.stdout) == table(second.stdout)

    # verifiers: trained on the first run, loaded on the second, the same report from both
    trained = cached_in(first.stdout, "training")
    assert cached_in(second.stdout, "loading") == trained and "training verifiers" not in second.stdout
    assert os.path.dirname(trained) == str(out / "verifiers")
    for name in ("orm", "pqm"):
        assert (out / "verifiers" / os.path.basename(trained) / name / "head.pt").exists()
    assert not os.path.exists(os.path.join(trained, "q_mu"))               # the prover is bo4: no verifier of its own
    report = json.loads((out / "verifiers.json").read_text())
    assert report == first_report
    for key in ("orm", "pqm", "pav", "pqm_mae", "pav_adv_corr", "outcome_error_by_depth", "held_out", "verifiers",
                "config"):
        assert key in report, key
    for name in ("orm", "pqm", "pav"):
        assert set(report[name]) >= {"bce", "mae", "adv_corr"}, report[name]
        assert all(finite(report[name][k]) for k in ("bce", "mae", "adv_corr")), report[name]
        assert 0 <= report[name]["mae"] <= 1 and report[name]["bce"] >= 0 and -1 <= report[name]["adv_corr"] <= 1
    assert report["pqm_mae"] == report["pqm"]["mae"] and report["pav_adv_corr"] == report["pav"]["adv_corr"]
    depth = report["outcome_error_by_depth"]
    assert len(depth["depth"]) > 0 and depth["depth"][0] == 1
    assert len(depth["depth"]) == len(depth["q_pi"]) == len(depth["effective"]) == len(depth["n"])
    assert all(finite(v) and 0 <= v <= 1 for v in depth["q_pi"] + depth["effective"])
    assert report["held_out"]["problems"] == 16 and report["held_out"]["rollouts_per_prefix"] == 8
    assert report["held_out"]["prefixes"] >= 16
    assert report["verifiers"] == trained and report["config"]["verifier_steps"] == 5
    png = (out / "outcome_error.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 1000

    # a changed verifier setting trains new verifiers in a new directory, and reuses the base policy
    third = run(TINY + ["--out", str(out), "--verifier-steps", "6"], tmp_path)
    assert third.returncode == 0, third.stderr[-3000:]
    assert "loading the base policy" in third.stdout and "loading verifiers" not in third.stdout
    retrained = cached_in(third.stdout, "training")
    assert retrained != trained and os.path.dirname(retrained) == str(out / "verifiers")
    assert sorted(os.listdir(out / "verifiers")) == sorted([os.path.basename(trained), os.path.basename(retrained)])
    assert json.loads((out / "verifiers.json").read_text())["verifiers"] == retrained
    assert json.loads((out / "verifiers" / os.path.basename(retrained) / "settings.json").read_text())[
        "verifier_steps"] == 6


BAD = [
    (["--task", "chess"], "unknown task 'chess'"),
    (["--n-mc", "0"], "--n-mc must be positive"),
    (["--n-mc", "-3"], "--n-mc must be positive"),
    (["--ks", "1,0,4"], "--ks entries must be positive"),
    (["--ks", "1,x"], "--ks must be a comma-separated list of integers"),
    (["--temperature", "0"], "--temperature must be positive"),
    (["--gammas", "5,-1"], "--gammas entries must be positive"),
    (["--n-mc", "abc"], "argument --n-mc: invalid int value: 'abc'"),
    (["--alpha", "abc"], "argument --alpha: invalid float value: 'abc'"),
    (["--alpha", "-1"], "--alpha must be a non-negative number"),
    (["--alpha", "nan"], "--alpha must be a non-negative number"),
    (["--prover", "bo0"], "--prover 'bo0' is neither boK"),
    (["--prover", "/nonexistent/dir"], "--prover '/nonexistent/dir' is neither boK"),
    (["--ks", "1,2,4", "--table-mc", "4"], "--table-mc 4 is too small for K = 4"),
    (["--table-mc", "32"], "--table-mc 32 is too small for K = 32"),          # the default ks reach 32
    (["--verifier-head-lr", "0"], "learning rates must be positive"),
    (["--verifier-lr=-0.001"], "--verifier-lr and --verifier-layers must be 0 or positive"),
    (["--verifier-layers=-1"], "--verifier-lr and --verifier-layers must be 0 or positive"),
    (["--p-err", "1"], "--p-err must be in [0, 1), got 1.0"),
    (["--p-err", "nan"], "--p-err must be in [0, 1), got nan"),
    (["--task", "planted", "--p-err", "0.5"], "--p-err applies to arith only"),
    (["--n-ops", "0"], "--n-ops must be positive, got 0"),
    (["--task", "planted", "--n-ops", "8"], "--n-ops applies to arith only"),
    (["--task", "planted", "--hard-facts"], "--hard-facts applies to arith only"),
    (["--task", "planted", "--demo-gamma", "0"], "--demo-gamma must be positive, got 0.0"),
    (["--demo-gamma", "5"], "--demo-gamma applies to planted only"),
    (["--task", "planted", "--verifier-model", "clean"], "--verifier-model clean is the embedded arith policy's"),
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


@pytest.mark.parametrize("args,stderr", [
    (["--task", "chess"], "error: unknown task 'chess'; choose from planted, arith\n"),
    (["--alpha", "abc"], "error: argument --alpha: invalid float value: 'abc'\n"),   # argparse's own error
], ids=["task chess", "alpha abc"])
def test_bad_input_as_a_process(args, stderr, tmp_path):
    """The same through a real interpreter: no warning, usage block or traceback joins the one line, and it is quick."""
    t0 = time.time()
    res = run(args + ["--out", str(tmp_path / "out")], tmp_path)
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr == stderr
    assert not (tmp_path / "out").exists() and time.time() - t0 < 60


def test_prover_k_above_eval_mc_is_bad_input(capsys):
    with pytest.raises(SystemExit) as exit:
        pav.check_config(pav.Config(task="planted", prover="bo4", eval_mc=2))
    assert exit.value.code == 2 and capsys.readouterr().err.startswith("error: ")


def test_p_err_and_n_ops_make_their_own_arith_with_its_own_output_directory():
    default, harder = pav.Config(), pav.Config(p_err=0.5)
    pav.check_config(default), pav.check_config(harder)
    assert default.out == os.path.join("runs", "arith") and harder.out == os.path.join("runs", "arith_p0.5")
    assert pav.make_task(default).p_err == 0.35 and pav.make_task(harder).p_err == 0.5
    assert pav.policy_settings(pav.make_task(harder), harder) != pav.policy_settings(pav.make_task(default), default)
    longer = pav.Config(n_ops=8)
    pav.check_config(longer)
    assert longer.out == os.path.join("runs", "arith_n8") and pav.make_task(longer).n_ops == 8
    assert pav.policy_settings(pav.make_task(longer), longer) != pav.policy_settings(pav.make_task(default), default)
    facts = pav.Config(hard_facts=True, p_err=0.9)
    pav.check_config(facts)
    assert facts.out == os.path.join("runs", "arith_p0.9_facts") and pav.make_task(facts).hard_facts


def test_demo_gamma_makes_its_own_planted_with_its_own_output_directory():
    default, paper = pav.Config(task="planted"), pav.Config(task="planted", demo_gamma=5.0)
    pav.check_config(default), pav.check_config(paper)
    assert default.out == os.path.join("runs", "planted") and paper.out == os.path.join("runs", "planted_g5")
    assert pav.make_task(default).demo_gamma == 3.0 and pav.make_task(paper).demo_gamma == 5.0
    assert pav.policy_settings(pav.make_task(paper), paper) != pav.policy_settings(pav.make_task(default), default)


def test_verifier_model_clean_is_the_policy_s_clean_warm_start(tmp_path, capsys):
    cfg = pav.Config(verifier_model="clean", out=str(tmp_path))
    pav.check_config(cfg)
    with pytest.raises(SystemExit) as exit:                # a policy cached before the clean stage was kept
        pav.verifier_backbone(cfg)
    assert exit.value.code == 2 and "delete" in capsys.readouterr().err
    clean = tmp_path / "policy" / "clean"
    clean.mkdir(parents=True)
    (clean / "config.json").write_text("{}")
    assert pav.verifier_backbone(cfg) == str(clean)
    assert pav.verifier_settings(pav.make_task(cfg), cfg)["verifier_model"] == "clean"   # not its path: movable
    assert pav.verifier_backbone(pav.Config(verifier_model="some/dir")) == "some/dir"
    assert pav.verifier_backbone(pav.Config()) == ""


def test_help_lists_every_config_field_with_its_default(tmp_path):
    res = run(["--help"], tmp_path)
    assert res.returncode == 0 and res.stderr == ""
    text = " ".join(res.stdout.split())                   # undo argparse's line wrapping
    fields = dataclasses.fields(pav.Config)
    flags = ["--" + f.name.replace("_", "-") for f in fields]
    starts = []
    for flag in flags:                                     # "  --n-mc N_MC  help", or "  --flag, --no-flag  help"
        m = re.search(rf"\s{flag}[\s,]", text)
        assert m, flag
        starts.append(m.start())
    assert starts == sorted(starts)
    for f, flag, a, b in zip(fields, flags, starts, starts[1:] + [len(text)]):
        entry = text[a:b]
        squeezed = "".join(entry.split())                  # argparse also breaks lines after hyphens
        assert f"(default:{f.default})" in squeezed, (flag, entry)
        assert "".join(f.metadata["help"].split()) in squeezed, (flag, entry)
