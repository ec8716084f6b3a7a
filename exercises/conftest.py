"""Grades the exercises: `pytest exercises/` checks your files; `pytest exercises/ --solutions` checks the ones in
exercises/solutions/; `pytest exercises/ --wrong` runs every test once per wrong version in exercises/wrong/, each of
which must fail (the project's own suite, tests/test_exercises.py, runs all three, so that none can rot)."""

import importlib
import os

import pytest

WRONG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "wrong")


def pytest_addoption(parser):
    parser.addoption("--solutions", action="store_true", help="grade exercises/solutions/ instead of exercises/")
    parser.addoption("--wrong", action="store_true", help="grade each wrong version in exercises/wrong/ instead")


def pytest_generate_tests(metafunc):
    """With --wrong, every test of exercise N runs once per module exercises/wrong/exN_*.py."""
    if metafunc.config.getoption("--wrong") and "ex" in metafunc.fixturenames:
        prefix = metafunc.module.EXERCISE.split("_")[0] + "_"
        names = sorted(f[:-3] for f in os.listdir(WRONG) if f.startswith(prefix) and f.endswith(".py"))
        metafunc.parametrize("ex", names, indirect=True)


@pytest.fixture
def ex(request):
    """The module under test: the test file's EXERCISE, from exercises/ or, with --solutions, exercises/solutions/
    (with --wrong, a wrong version)."""
    if hasattr(request, "param"):
        return importlib.import_module(f"exercises.wrong.{request.param}")
    package = "exercises.solutions" if request.config.getoption("--solutions") else "exercises"
    return importlib.import_module(f"{package}.{request.module.EXERCISE}")
