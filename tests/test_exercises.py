"""The exercises cannot rot: every solution in exercises/solutions/ passes its exercise's tests, and every blank that a
student starts from fails all of them (the same tests, pointed at the other module by `--solutions`)."""

import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT


def grade(*args):
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "exercises", *args], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    counts = dict((k, int(n)) for n, k in re.findall(r"(\d+) (passed|failed|error)", r.stdout.splitlines()[-1]))
    return r.returncode, counts


@pytest.mark.slow
def test_solutions_pass_and_blanks_fail():
    n_exercises = len([f for f in os.listdir(os.path.join(ROOT, "exercises")) if re.match(r"ex\d+_.*\.py$", f)])
    assert n_exercises >= 6
    code, solved = grade("--solutions")
    assert code == 0 and solved.get("passed", 0) >= 2 * n_exercises and "failed" not in solved, solved
    code, blank = grade()
    assert code != 0 and blank.get("failed") == solved["passed"] and "passed" not in blank, blank
