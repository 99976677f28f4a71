"""The placements and reservations file (gt_remote/base/placements.py): private files, written
whole, and one read-decide-write at a time across processes, under its lock."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from gt_remote.base.errors import UsageError
from gt_remote.base.placements import Book, check_name
from gt_remote.base.pool import Reservation
from tests.testbed import REPO

# Each process: under the lock, read a count, give other processes every chance to interleave, write count + 1.
INCREMENT = """
import os, sys, time
from gt_remote.base.placements import Book
for _ in range(int(sys.argv[1])):
    with Book() as book:
        count = int(book.placements.get("counter", {}).get("count", 0))
        time.sleep(0.001)
        book.placements["counter"] = {"host": "pc", "count": count + 1}
        book.save()
"""


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    return tmp_path / "state" / "gt-remote" / "placements"


def test_placements_and_reservations_are_private_files(state: Path) -> None:
    with Book() as book:
        book.placements["polecat-7"] = {"host": "pc2", "at": "2026-01-01T00:00:00+00:00", "down_seen": None}
        book.reservations.append(Reservation("pc2", 100.0, 1, "polecat-7"))
        book.save()
    for name in ("placements.json", "reservations.json", "lock"):
        assert stat.S_IMODE(os.stat(state / name).st_mode) == 0o600, name
    assert stat.S_IMODE(os.stat(state).st_mode) == 0o700
    assert [p.name for p in state.iterdir() if p.name.startswith(".")] == [], "no temporary file is left"
    with Book() as book:
        assert book.placements["polecat-7"]["host"] == "pc2"
        assert book.reservations == [Reservation("pc2", 100.0, 1, "polecat-7")]


def test_a_garbled_file_reads_as_empty_and_is_written_whole_again(state: Path) -> None:
    state.mkdir(parents=True, mode=0o700)
    (state / "placements.json").write_text('{"polecat-1": {"host": "pc1"}, "bad": 3, "worse": {"host": 4}')  # cut short
    (state / "reservations.json").write_text('{"reservations": [{"host": "pc1"}, 7]}')
    with Book() as book:
        assert book.placements == {} and book.reservations == []
        book.placements["polecat-1"] = {"host": "pc1"}
        book.save()
    with Book() as book:
        assert book.placements == {"polecat-1": {"host": "pc1"}}


def test_picks_in_parallel_each_see_the_ones_before(state: Path, tmp_path: Path) -> None:
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state"), "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", INCREMENT, "20"], env=env) for _ in range(6)]
    assert [proc.wait(60) for proc in procs] == [0] * 6
    with Book() as book:
        assert book.placements["counter"]["count"] == 120, "an increment was lost: two processes held the book at once"


@pytest.mark.parametrize("name", ["", "a\nb", "tab\there", "x" * 201, "del\x7f"])
def test_a_polecat_name_must_be_printable(name: str) -> None:
    with pytest.raises(UsageError) as raised:
        check_name(name)
    assert "--for takes a name of 1 to 200 printable characters" in str(raised.value)


def test_a_polecat_name_may_be_any_printable_text() -> None:
    assert check_name("polecat-7") == "polecat-7" and check_name("rig/polecat 7 ü") == "rig/polecat 7 ü"
