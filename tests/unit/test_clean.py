"""`clean`'s record of the remotes it reaches, without a remote: kept from the first bring-up
until `clean HOST --forget`, past `down --stop-server` (which forgets only the server), and
`--forget` refused without a HOST before anything is reached (#30)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gt_remote.base.config import HostSettings
from gt_remote.runtime import reach
from tests.conftest import Gt
from tests.helpers import one_error_line


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    return tmp_path / "state" / "gt-remote"


def test_the_reached_record_outlives_down_stop_server_until_forget(state: Path) -> None:
    settings = HostSettings("gaming-pc", "gamer@192.0.2.10", install_dir="/opt/gt", install_command="curl -H 'Authorization: token ghp_x' https://example.invalid | sh")
    reach.remember(settings)
    reach.forget("gaming-pc")  # what `down --stop-server` does once the server is stopped
    assert reach.remembered("gaming-pc") is None
    assert reach.reached_host_names() == ["gaming-pc"]
    found = reach.settings_for("gaming-pc", None, None)
    assert found is not None and found.destination == "gamer@192.0.2.10" and found.install_dir == "/opt/gt"
    assert found.install_command is None and "ghp_x" not in (state / "reached" / "gaming-pc.json").read_text()  # no token kept for long
    assert reach.forget_reached("gaming-pc") is True
    assert reach.reached_host_names() == [] and reach.settings_for("gaming-pc", None, None) is None
    assert reach.forget_reached("gaming-pc") is False
    assert (state / "reached").stat().st_mode & 0o077 == 0


def test_forget_without_a_host_is_refused_before_any_connection(gt: Gt, untouched_host: Path) -> None:
    result = gt("clean", "--forget", ssh_config=untouched_host)
    assert result.returncode == 2
    line = one_error_line(result.stderr)
    assert "--forget names the host to forget" in line and "gt-remote clean HOST --forget" in line
