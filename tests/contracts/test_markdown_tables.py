"""Every Markdown table in README.md and docs/ renders as the table it was written as.

GitHub (GFM) splits a table row at every `|` that is not escaped, inside a code span too
(spec example 200: `` `\\|` `` is how a code span in a cell holds a pipe). A row with more or fewer
cells than its header is padded or cut, so its text lands in the wrong column or vanishes; a
`|` line with no header above it (a table that a paragraph broke in two) is shown as plain
text, pipes and all; and a text line right after a table's last row becomes one more row.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.testbed import REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

DELIMITER_CELL = re.compile(r"^\s*:?-+:?\s*$")


@dataclass
class Table:
    """One table: where its header is, and each row's line number and cells."""

    path: Path
    header_line: int
    header: list[str]
    rows: list[tuple[int, list[str]]]


def cells(line: str) -> list[str]:
    """A row's cells as GFM splits them: at each unescaped `|`, code spans included."""
    text = line.strip()
    text = text.removeprefix("|")
    if text.endswith("|") and not text.endswith("\\|"):
        text = text[:-1]
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", text)]


def is_delimiter(line: str) -> bool:
    return line.strip().startswith("|") and all(DELIMITER_CELL.match(cell) for cell in cells(line))


def _prose_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text) outside fenced code blocks: a `|` in a shell example is no table."""
    found, fenced = [], False
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip().startswith("```"):
            fenced = not fenced
            found.append((number, ""))  # a fence ends a table like a blank line
            continue
        found.append((number, "" if fenced else line))
    return found


def tables_and_strays(path: Path) -> tuple[list[Table], list[str]]:
    """The tables of a document, and each problem that is not a cell count: a `|` row that
    belongs to no table, a text line glued to a table's end."""
    lines = _prose_lines(path)
    tables: list[Table] = []
    problems: list[str] = []
    index = 0
    while index < len(lines):
        number, line = lines[index]
        following = lines[index + 1][1] if index + 1 < len(lines) else ""
        if line.strip().startswith("|") and is_delimiter(following):
            table = Table(path, number, cells(line), [])
            index += 2
            while index < len(lines) and lines[index][1].strip():
                row_number, row = lines[index]
                if not row.strip().startswith("|"):
                    problems.append(f"{path.name}:{row_number}: text right after the table of line {number} (no blank line), so GitHub makes it a row: {row.strip()[:60]!r}")
                table.rows.append((row_number, cells(row)))
                index += 1
            tables.append(table)
            continue
        if line.strip().startswith("|"):
            problems.append(f"{path.name}:{number}: a table row outside any table (a paragraph or blank line above it broke the table): {line.strip()[:60]!r}")
        index += 1
    return tables, problems


def table_problems(path: Path) -> list[str]:
    tables, problems = tables_and_strays(path)
    for table in tables:
        for number, row in table.rows:
            if len(row) != len(table.header):
                split_span = any(cell.count("`") % 2 for cell in row)  # a code span cut in two by a pipe
                hint = " (an unescaped | inside backticks splits the cell on GitHub too: write \\|)" if split_span else ""
                problems.append(f"{path.name}:{number}: {len(row)} cells, but the header on line {table.header_line} has {len(table.header)}{hint}")
    return problems


def test_the_checker_sees_the_faults_it_looks_for(tmp_path: Path) -> None:
    """The faults this file exists for, each caught: a paragraph inside a table, a short row,
    a pipe in a code span, a text line glued to the table; and escaped pipes left alone."""
    doc = tmp_path / "doc.md"
    doc.write_text(
        "| a | b |\n| --- | --- |\n| `x\\|y` | 1 |\n| `x|y` | 2 |\n| only one |\n\nA paragraph.\n| c | 3 |\n\n"
        "| a | b |\n|:--|--:|\n| 1 | 2 |\nglued\n\n```\n| not | a | table |\n```\n"
    )
    problems = table_problems(doc)
    assert [p.split(":")[1] for p in problems] == ["8", "13", "4", "5", "13"], problems
    assert "unescaped | inside backticks" in problems[2] and "outside any table" in problems[0] and "no blank line" in problems[1]


def test_the_docs_have_tables() -> None:
    counted = {path.name: len(tables_and_strays(path)[0]) for path in DOCS}
    assert counted["README.md"] >= 2 and counted["troubleshooting.md"] >= 10 and counted["usage.md"] >= 4, counted


@pytest.mark.parametrize("path", DOCS, ids=[path.name for path in DOCS])
def test_every_table_is_well_formed(path: Path) -> None:
    assert table_problems(path) == []
