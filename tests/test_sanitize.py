"""#15.3: text from the far side reaches the terminal, the log, the record and `status` with
its escape sequences made visible (CVE-2019-6109's class: window title, OSC 52 clipboard)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from gt_remote.base.sanitize import ascii_int, visible, visible_data, visible_formatter, visible_lines
from gt_remote.remote.probe import facts_from_fields, parse_version
from tests.conftest import Gt
from tests.testbed import SshHost, free_loopback_port

TITLE = "\x1b]0;pwned\x07"
CLIPBOARD = "\x1b]52;c;cHduZWQ=\x07"
SHOWN = "\\x1b]0;pwned\\x07\\x1b]52;c;cHduZWQ=\\x07"


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        (TITLE + CLIPBOARD, SHOWN),
        ("a\nb\rc", "a\\nb\\rc"),  # no forged second line
        ("col\tumn", "col\tumn"),  # TAB stays
        ("\x00\x7f\x9b", "\\x00\\x7f\\x9b"),  # NUL, DEL, a C1 CSI
        ("abc\u202edef\u2028", "abc\\u202edef\\u2028"),  # a bidi override, a line separator
        ("C:\\Users\\gamer é ü 日本", "C:\\Users\\gamer é ü 日本"),  # backslashes and printable text unchanged
    ],
)
def test_visible_escapes_every_control_but_tab(raw: str, shown: str) -> None:
    assert visible(raw) == shown


def test_visible_lines_and_data() -> None:
    assert visible_lines(f"one {TITLE}\ntwo") == "one \\x1b]0;pwned\\x07\ntwo"
    assert visible_data({"server": {"version": TITLE, "pid": 7}, "list": [TITLE], TITLE: None}) == {
        "server": {"version": "\\x1b]0;pwned\\x07", "pid": 7},
        "list": ["\\x1b]0;pwned\\x07"],
        "\\x1b]0;pwned\\x07": None,
    }


def test_log_formatter_makes_the_message_visible_and_keeps_a_traceback() -> None:
    formatter = visible_formatter("%(levelname)s %(message)s")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        import sys

        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "version %s", (TITLE,), sys.exc_info())
    text = formatter.format(record)
    assert text.startswith("ERROR version \\x1b]0;pwned\\x07\nTraceback")
    assert "\x1b" not in text


@pytest.mark.parametrize(("text", "number"), [("42", 42), ("²", None), ("٣", None), ("1" * 5000, None), ("", None), ("-1", None), (" 1", None), ("1\n", None), (None, None)])
def test_ascii_int_takes_ascii_digits_of_bounded_length_only(text: str | None, number: int | None) -> None:
    assert ascii_int(text) == number


def test_probe_numbers_of_a_hostile_far_side_are_no_numbers() -> None:
    """#15.4: `pid=²` passed isdigit() and ended `up` in 'internal error'; 5,000 digits too."""
    facts = facts_from_fields({"pid": "²", "other": "٣:" + "9" * 5000, "version": f"ccmux-server {TITLE}"})
    assert (facts.pid, facts.other_port, facts.other_pid) == (None, None, None)
    assert facts.version == "\\x1b]0;pwned\\x07"
    assert parse_version("ccmux-server 0.1.1") == "0.1.1"


def test_escape_sequence_in_the_servers_version_is_shown_escaped(gt: Gt, ssh_host: SshHost) -> None:
    """A server binary whose `--version` prints a window-title and an OSC 52 sequence."""
    ssh_host.install_standin("/usr/local/lib/ccmux-standin")
    wrapper = (
        "#!/bin/sh\n"
        "if [ \"$1\" = --version ]; then printf 'ccmux-server \\033]0;pwned\\007\\033]52;c;cHduZWQ=\\007\\n'; exit 0; fi\n"
        'exec /usr/local/lib/ccmux-standin "$@"\n'
    )
    ssh_host.container.copy_into_container(wrapper.encode(), "/usr/local/bin/ccmux-server", 0o755)
    up = gt.up(ssh_host, "--local", f"tcp://127.0.0.1:{free_loopback_port()}", standin=False)
    assert up.returncode == 0, up.stderr
    assert f"starting ccmux-server {SHOWN} on gaming-pc" in up.stderr
    status = gt("status", "gaming-pc")
    assert f"server      ccmux-server {SHOWN} pid" in status.stdout
    [row] = json.loads(gt("status", "gaming-pc", "--json").stdout)
    assert row["state"] == "up" and row["server"]["version"] == SHOWN  # live, from the supervisor
    record = (gt.home / ".local/state/gt-remote/hosts/gaming-pc.json").read_text()
    log = gt("logs", "gaming-pc").stdout
    for text in (up.stderr, up.stdout, status.stdout, record, log, Path(gt.home / ".local/state/gt-remote/logs/gaming-pc.log").read_text()):
        assert "\x1b" not in text and "\x07" not in text
