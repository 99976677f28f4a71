"""docs/security.md's threat model names the test that proves each defence: those tests exist."""

from __future__ import annotations

import re

from tests.testbed import REPO

ROW = re.compile(r"^\| (?P<who>[^|]+) \|.*\| (?P<test>[^|]+) \|$")
NAMED = re.compile(r"`(?:(?P<file>tests/[\w/]+\.py))?::(?P<name>test_\w+)`")


def threat_rows() -> list[tuple[str, str]]:
    text = (REPO / "docs" / "security.md").read_text()
    table = text[text.index("## Threat model") :]
    return [(m["who"], m["test"]) for line in table.splitlines() if (m := ROW.match(line)) and m["who"] not in ("who", "---")]


def test_every_test_the_threat_model_names_exists() -> None:
    rows = threat_rows()
    assert len(rows) >= 20
    named = 0
    for _, cell in rows:
        current = None
        for match in NAMED.finditer(cell):
            current = match["file"] or current
            assert current, f"{cell!r}: '::{match['name']}' follows no file"
            source = (REPO / current).read_text()
            assert re.search(rf"^(async )?def {match['name']}\(", source, re.M), f"{current}::{match['name']} does not exist"
            named += 1
    assert named >= 20


def test_every_row_has_a_test_or_says_why_not() -> None:
    for who, cell in threat_rows():
        assert NAMED.search(cell) or "<!-- test: TODO -->" in cell or "documented limit" in cell, f"row of {who!r} names no test"
