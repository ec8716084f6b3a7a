"""Grades the exercises: `pytest exercises/` checks your files; `pytest exercises/ --solutions` checks the ones in
exercises/solutions/ (the project's own suite runs both, so that neither can rot)."""

import importlib

import pytest


def pytest_addoption(parser):
    parser.addoption("--solutions", action="store_true", help="grade exercises/solutions/ instead of exercises/")


@pytest.fixture
def ex(request):
    """The module under test: the test file's EXERCISE, from exercises/ or, with --solutions, exercises/solutions/."""
    package = "exercises.solutions" if request.config.getoption("--solutions") else "exercises"
    return importlib.import_module(f"{package}.{request.module.EXERCISE}")
