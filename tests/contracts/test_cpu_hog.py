"""The --cpu-hog option (tests/conftest.py): one core kept busy by a process the run owns."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_cpu_hog_runs_only_when_asked(cpu_hog: int | None, request: pytest.FixtureRequest) -> None:
    if not request.config.getoption("--cpu-hog"):
        assert cpu_hog is None
        return
    assert cpu_hog is not None
    fields = Path(f"/proc/{cpu_hog}/stat").read_text().rsplit(")", 1)[1].split()
    assert fields[0] in ("R", "S"), f"the hog is {fields[0]}, not running"
    assert b"sched_setaffinity" in Path(f"/proc/{cpu_hog}/cmdline").read_bytes()
