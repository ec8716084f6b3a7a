"""The README's links into the code point at what they name: [`name`](file.py#L<n>) is the line where `name` is
defined in file.py (a def, a class, or an assignment), so the paper-to-code map cannot drift from the code."""

import os
import re

from conftest import ROOT

LINK = re.compile(r"\[`([\w.]+)`\]\(([\w/]+\.py)#L(\d+)\)")


def test_every_code_link_points_at_the_definition_it_names():
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    links = LINK.findall(text)
    assert len(links) >= 8, links
    for name, path, line in links:
        lines = open(os.path.join(ROOT, path), encoding="utf-8").read().split("\n")
        target = lines[int(line) - 1].strip()
        short = name.split(".")[-1]
        assert re.match(rf"(def|class) {short}\b|{short} = |{short}: ", target), (name, path, line, target)


def test_readme_is_a_page_for_readers():
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    assert len(text.encode()) <= 20_000
    assert not re.search(r"20\d\d-[01]\d-[0-3]\d", text)                  # no dates: a page, not a log
    assert not re.search(r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*\d)[0-9a-f]{7,40}\b", text)   # no commit hashes
    assert "not rerun" not in text
