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
    with open(os.path.join(ROOT, "docs", "glossary.md"), encoding="utf-8") as f:   # GitHub's anchors of its headings
        anchors = {re.sub(r"[^\w\- ]", "", line[4:].strip().lower()).replace(" ", "-") for line in f
                   if line.startswith("### ")}
    links = set()
    for name in os.listdir(EXERCISES):
        if name.endswith(".py"):
            with open(os.path.join(EXERCISES, name), encoding="utf-8") as f:
                links |= set(re.findall(r"\]\(\.\./docs/glossary\.md#([\w-]+)\)", f.read()))
    assert len(links) >= 10 and links <= anchors, links - anchors
