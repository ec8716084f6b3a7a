"""The exercises cannot rot, and doing them cannot break this suite:

- every solution in exercises/solutions/ passes its exercise's tests;
- every blank fails all of them. The blanks are made afresh in a temporary copy of exercises/ (each solution with its
  function bodies replaced by `raise NotImplementedError`, which is what a blank is), never read from exercises/ex*.py,
  which a student may have filled in;
- every wrong version in exercises/wrong/ (a plausible mistake, one per file) fails the tests its docstring names;
- the numbers in the solutions' answers hold, and the exercises' glossary links point at headings of docs/glossary.md.
"""

import ast
import math
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest
import torch

from conftest import ROOT

EXERCISES = os.path.join(ROOT, "exercises")
SOLUTIONS = sorted(f for f in os.listdir(os.path.join(EXERCISES, "solutions")) if re.match(r"ex\d+_\w+\.py$", f))
WRONG = sorted(f for f in os.listdir(os.path.join(EXERCISES, "wrong")) if re.match(r"ex\d+_\w+\.py$", f))


def grade(root, *args):
    """Run the exercises' graders in `root`; returns the exit code and the counts {"passed": .., "failed": ..}."""
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "exercises", *args], cwd=root,
                       capture_output=True, text=True, timeout=300)
    counts = dict((k, int(n)) for n, k in re.findall(r"(\d+) (passed|failed|error)", r.stdout.splitlines()[-1]))
    return r.returncode, counts


def blank(source):
    """The blank a student starts from, made from a solution: every function body raises NotImplementedError."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef):
            node.body = [ast.Raise(ast.Call(ast.Name("NotImplementedError"), [], []))]
    return ast.unparse(ast.fix_missing_locations(tree))


@pytest.mark.slow
def test_solutions_pass_and_blanks_fail(tmp_path):
    assert len(SOLUTIONS) >= 6
    code, solved = grade(ROOT, "--solutions")
    assert code == 0 and solved.get("passed", 0) >= 2 * len(SOLUTIONS) and "failed" not in solved, solved
    shutil.copytree(EXERCISES, tmp_path / "exercises", ignore=shutil.ignore_patterns("__pycache__"))
    for name in SOLUTIONS:
        with open(os.path.join(EXERCISES, "solutions", name)) as f:
            (tmp_path / "exercises" / name).write_text(blank(f.read()))
    code, blanks = grade(tmp_path)
    assert code != 0 and blanks.get("failed") == solved["passed"] and "passed" not in blanks, blanks


@pytest.mark.slow
def test_every_wrong_version_fails_the_tests_it_names(tmp_path):
    assert {f.split("_")[0] for f in WRONG} == {f.split("_")[0] for f in SOLUTIONS}   # every exercise has some
    grade(ROOT, "--wrong", f"--junitxml={tmp_path / 'wrong.xml'}")
    failed = {f[:-3]: set() for f in WRONG}
    for case in ET.parse(tmp_path / "wrong.xml").iter("testcase"):
        test, version = re.fullmatch(r"(\w+)\[(\w+)\]", case.get("name")).groups()
        if case.find("failure") is not None:                              # an import error is an "error": not caught
            failed[version].add(test)
    for name in WRONG:
        with open(os.path.join(EXERCISES, "wrong", name)) as f:
            doc = ast.get_docstring(ast.parse(f.read()))
        named = set(re.findall(r"test_\w+", doc.split("Caught by")[-1]))
        assert named and named <= failed[name[:-3]], (name, named, failed[name[:-3]])


def test_the_answers_numbers():
    """The numbers in the answers of exercises/solutions/ex1_best_of_k.py (Remark 3.1) and ex3_advantage.py
    (appendix G)."""
    from exercises.solutions.ex1_best_of_k import bok_closed
    from exercises.solutions.ex3_advantage import advantages
    step = torch.tensor([0.02, 0.05], dtype=torch.float64)                # Q^pi before and after a good step
    assert bok_closed(step, 4).tolist() == pytest.approx([0.0776, 0.1855], abs=1e-4)
    assert float(advantages(bok_closed(step, 4))) == pytest.approx(0.108, abs=5e-4)       # 3.6 times A^pi = 0.03
    assert float(advantages(bok_closed(step, 4))) / 0.03 == pytest.approx(3.6, abs=0.01)
    for k in (1, 2, 4, 8, 16, 32):                                        # the slope at Q = 1/K exceeds K / e
        assert k * (1 - 1 / k) ** (k - 1) > k / math.e
    too_strong = advantages(bok_closed(torch.tensor([0.4, 0.5], dtype=torch.float64), 16))
    assert float(too_strong) == pytest.approx(0.0003, abs=5e-5)
    q_mu = torch.tensor([0.6, 0.6, 0.9])                                  # a restatement, then a real step
    assert q_mu[1:].tolist() == pytest.approx([0.6, 0.9]) and advantages(q_mu).tolist() == pytest.approx([0.0, 0.3])
    spoiled = torch.tensor([0.6, 0.3])
    assert float(spoiled[1]) == pytest.approx(0.3) and float(advantages(spoiled)) == pytest.approx(-0.3)


def test_glossary_links_point_at_its_headings():
    """Every exercise statement links the glossary, and every link names one of its headings. A statement a student
    has replaced (a solution copied over its blank) is not read: the suite must pass with the homework done."""
    with open(os.path.join(ROOT, "docs", "glossary.md"), encoding="utf-8") as f:   # GitHub's anchors of its headings
        anchors = {re.sub(r"[^\w\- ]", "", line[4:].strip().lower()).replace(" ", "-") for line in f
                   if line.startswith("### ")}
    link = re.compile(r"\]\(\.\./docs/glossary\.md#([\w-]+)\)")
    assert link.findall("a [prover](../docs/glossary.md#prover) and [Rex](../docs/glossary.md#rex)") == ["prover", "rex"]
    for name in sorted(os.listdir(EXERCISES)):
        if re.match(r"ex\d+_\w+\.py$", name):
            with open(os.path.join(EXERCISES, name), encoding="utf-8") as f:
                text = f.read()
            if text.startswith('"""Exercise'):
                links = set(link.findall(text))
                assert links and links <= anchors, (name, links - anchors)


@pytest.fixture
def pipeline_functions(monkeypatch):
    """Restore the project's own functions after a test that swaps the exercises' in."""
    import pav
    import rl
    from exercises import experiments
    for name in experiments.SWAPS:
        for target, attr, _ in experiments.SWAPS[name]:
            monkeypatch.setattr(target, attr, getattr(target, attr))
    return experiments


def test_experiments_run_the_exercises_functions_in_the_pipeline(pipeline_functions):
    """After swap_in, what pav.PAV.score and rl.policy_step call is the exercise's function (looked up in the module
    at call time), and a PAV built afterwards scores with it: here a planted wrong Best-of-K (1 - (1 - q)^(K + 1)) and
    a planted wrong advantage (Q^mu after the step) change the scores by hand-computed amounts."""
    import types
    import pav
    import rl
    experiments = pipeline_functions
    experiments.swap_in(list(experiments.SWAPS), solutions=True)
    from exercises.solutions import ex1_best_of_k, ex2_unbiased_bok, ex3_advantage, ex4_token_rewards
    assert pav.bok_closed is ex1_best_of_k.bok_closed and pav.bok_unbiased is ex2_unbiased_bok.bok_unbiased
    assert pav.advantages is ex3_advantage.advantages and pav.effective_reward is ex3_advantage.effective_reward
    assert rl.token_rewards is ex4_token_rewards.token_rewards

    class FixedPQM:   # what pav.predict_q returns: Q^pi 0.5 then 0.75 on one response of one step
        pass
    scorer = pav.PAV(FixedPQM(), None, None, k=2)
    q, m = torch.tensor([[0.5, 0.75]]), torch.ones(1, 2, dtype=torch.bool)
    original = pav.predict_q
    pav.predict_q = lambda *a: (q, m)
    try:
        _, q_mu, a_mu, _, _ = scorer.score([[1]], [[2]])
        assert q_mu.tolist() == [[0.75, 0.9375]] and a_mu.tolist() == [[0.1875]]          # Bo2: 1 - (1 - q)^2
        wrong = types.SimpleNamespace(bok_closed=lambda x, k: 1 - (1 - x) ** (k + 1), advantages=lambda x: x[..., 1:])
        pav.bok_closed, pav.advantages = wrong.bok_closed, wrong.advantages
        _, q_mu, a_mu, _, _ = scorer.score([[1]], [[2]])
        assert q_mu.tolist() == [[0.875, 0.984375]] and a_mu.tolist() == [[0.984375]]
    finally:
        pav.predict_q = original


def test_experiments_refuse_an_unwritten_exercise_and_a_missing_cache(pipeline_functions, monkeypatch, tmp_path,
                                                                       capsys):
    """One line and exit 2: a blank exercise (a student's file may be filled in, so the blank is planted), and no
    policy cached by `python rl.py` (run from an empty directory)."""
    import types
    experiments = pipeline_functions
    blank = types.ModuleType("exercises.ex4_token_rewards")
    blank.token_rewards = lambda *a: (_ for _ in ()).throw(NotImplementedError("exercise 4: your code here"))
    monkeypatch.setitem(sys.modules, "exercises.ex4_token_rewards", blank)
    with pytest.raises(SystemExit) as e:
        experiments.swap_in(["ex4_token_rewards"], solutions=False)
    assert e.value.code == 2 and "token_rewards in exercises/ex4_token_rewards.py is not written yet" in \
        capsys.readouterr().err
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        experiments.main(["provers", "--solutions"])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and err.count("\n") == 0 and "run `python rl.py` first" in err
