"""`gt-remote status` of a host never seen."""

from __future__ import annotations

import json

from tests.conftest import Gt
from tests.helpers import one_error_line

# --- status of an unknown host ------------------------------------------------------------


def test_status_of_a_host_never_seen(gt: Gt) -> None:
    human = gt("status", "gamign-pc")
    assert human.returncode == 1 and human.stdout == ""
    assert "gt-remote has never brought up a host named 'gamign-pc'" in one_error_line(human.stderr)
    machine = gt("status", "gamign-pc", "--json")
    assert machine.returncode == 1 and json.loads(machine.stdout) == []

