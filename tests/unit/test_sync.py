"""`gt-remote sync` without a remote: far-side sequences reach the terminal as text, rsync's
operands follow `--`, git files are left out of a pull unless asked, progress only on a terminal."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from gt_remote.base.config import HostSettings
from gt_remote.base.errors import GtRemoteError
from gt_remote.commands import sync
from gt_remote.commands.sync import Transfer, rsync_command
from tests.helpers import SEQUENCES, SHOWN, assert_no_control


def settings_for_name(name: str) -> HostSettings:
    return HostSettings(name=name, destination=name, local_url="tcp://127.0.0.1:9999")


# --- progress only where a person watches -------------------------------------------------


def test_rsync_progress_only_on_a_terminal() -> None:
    settings = HostSettings(name="gaming-pc", destination="gaming-pc", local_url="tcp://127.0.0.1:9999")
    command = rsync_command(settings, Transfer(Path("/tmp/x"), "x", False), True, False, False)
    assert "--info=progress2,stats1" not in command and "--info=stats1" in command  # pytest's stdout is no terminal


def test_rsync_operands_follow_a_double_dash() -> None:
    """No path, local or remote, is ever read as an rsync option (#15.8)."""
    from gt_remote.base.config import HostSettings
    from gt_remote.commands.sync import Transfer, rsync_command

    settings = HostSettings(name="pc", destination="pc", local_url="tcp://127.0.0.1:9999")
    for push in (True, False):
        command = rsync_command(settings, Transfer(Path("/tmp/-e sh"), "-e sh", False), push, False, False)
        assert command[-3] == "--" and "/tmp/-e sh" in command[-2:] and "pc:-e sh" in command[-2:]


# --- what the far side prints -----------------------------------------------------------


def test_far_side_sequences_reach_the_terminal_as_text(capsys: pytest.CaptureFixture[str]) -> None:
    """stdout, stderr and the error line of a failing transfer: every byte of the far side's
    text goes through visible(). A stand-in for rsync prints what a hostile remote could."""
    payload = SEQUENCES.encode() + b" \xc2\x9b31m c1 \x9b raw\tcolumn"
    stand_in = f"import sys; sys.stdout.buffer.write({payload!r} + b'\\n' + {payload!r}); sys.stderr.buffer.write({payload!r} + b'\\r\\n'); sys.exit(23)"
    with pytest.raises(GtRemoteError) as failed:
        sync._rsync([sys.executable, "-c", stand_in], settings_for_name("pc"))
    shown = capsys.readouterr()
    for text in (shown.out, shown.err, str(failed.value)):
        assert_no_control(text)
        assert SHOWN in text and "\\x9b31m c1" in text and "\tcolumn" in text
    assert shown.out.count("\n") == 2 and shown.err.count("\n") == 1


def test_only_a_pull_leaves_out_git_files_and_only_unless_asked() -> None:
    """The command itself: unanchored rules for any depth, anchored ones for a git directory."""
    settings = settings_for_name("pc")
    checkout = sync.Transfer(Path("/tmp/rig"), "gt/rig", True)
    pulled = sync.rsync_command(settings, checkout, False, False, False)
    assert {"--exclude=.git/hooks/", "--exclude=.git/config", "--exclude=.git/modules/**/config"} <= set(pulled)
    assert pulled.index("--exclude=.git/config") < pulled.index("--")  # an option, not an operand
    assert not any(arg.startswith("--exclude=/") for arg in pulled)
    git_dir = sync.rsync_command(settings, sync.Transfer(Path("/tmp/rig/.git"), "gt/rig/.git", True), False, False, False)
    assert {"--exclude=/hooks/", "--exclude=/config"} <= set(git_dir)
    assert not any(arg.startswith("--exclude") for arg in sync.rsync_command(settings, checkout, True, False, False))
    assert not any(arg.startswith("--exclude") for arg in sync.rsync_command(settings, checkout, False, False, False, with_git_config=True))

