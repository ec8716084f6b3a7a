"""The exercises cannot rot, and doing them cannot break this suite:

- every solution in exercises/solutions/ passes its exercise's tests;
- every blank fails all of them. The blanks are made afresh in a temporary copy of exercises/ (each solution with its
  function bodies replaced by `raise NotImplementedError`, which is what a blank is), never read from exercises/ex*.py,
  which a student may have filled in.
"""

import ast
import os
import re
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT

EXERCISES = os.path.join(ROOT, "exercises")
SOLUTIONS = sorted(f for f in os.listdir(os.path.join(EXERCISES, "solutions")) if re.match(r"ex\d+_\w+\.py$", f))


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
