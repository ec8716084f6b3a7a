"""`python pav.py` as a user runs it: a tiny end-to-end run, bad input, --help."""

import dataclasses
import json
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
# A tiny budget: a 1-layer, 32-wide policy, 16 states x 2 actions x 16 rollouts.
TINY = ["--task", "planted", "--d-model", "32", "--n-layers", "1", "--n-states", "16", "--n-actions", "2",
        "--n-mc", "16", "--ks", "1,2,4", "--gammas", "5,10", "--eval-problems", "64"]


def run(args, cwd):
    """Run pav.py from `cwd` (a temporary directory, so a default runs/ could never land in the repo)."""
    return subprocess.run([sys.executable, SCRIPT, *args], cwd=cwd, env=ENV, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.slow
def test_planted_end_to_end_builds_then_reloads_and_repeats(tmp_path):
    out = tmp_path / "out"
    first = run(TINY + ["--out", str(out)], tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
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
    assert report["config"]["n_mc"] == 16 and report["config"]["out"] == str(out)
    assert (out / "policy" / "settings.json").exists() and not (tmp_path / "runs").exists()
    # the same numbers whether the policy was just built or loaded (seeded, CPU)
    assert first.stdout.split("base policy accuracy")[1].split("prover table")[0] == \
        second.stdout.split("base policy accuracy")[1].split("prover table")[0]
    table = lambda s: [l for l in s.splitlines() if "|" in l and not l.startswith("device")]
    assert table(first.stdout) == table(second.stdout)


BAD = [
    (["--task", "chess"], "unknown task 'chess'"),
    (["--n-mc", "0"], "--n-mc must be positive"),
    (["--n-mc", "-3"], "--n-mc must be positive"),
    (["--ks", "1,0,4"], "--ks entries must be positive"),
    (["--ks", "1,x"], "--ks must be a comma-separated list of integers"),
    (["--temperature", "0"], "--temperature must be positive"),
    (["--gammas", "5,-1"], "--gammas entries must be positive"),
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


def test_bad_input_as_a_process(tmp_path):
    """The same through a real interpreter: no warning or traceback joins the one line, and it is quick."""
    t0 = time.time()
    res = run(["--task", "chess", "--out", str(tmp_path / "out")], tmp_path)
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr == "error: unknown task 'chess'; choose from planted, arith\n"
    assert not (tmp_path / "out").exists() and time.time() - t0 < 60


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
