"""What reaches the terminal and the logs is visible text: control characters escaped, and
numbers from a hostile far side read only as bounded ASCII digits (fuzzed too)."""

from __future__ import annotations

import logging
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gt_remote.base.sanitize import ascii_int, visible, visible_data, visible_formatter, visible_lines
from gt_remote.remote.probe import facts_from_fields, parse_version
from tests.helpers import TITLE_CLIPBOARD_SHOWN as SHOWN
from tests.unit.strategies import FUZZ, TEXT

TITLE = "\x1b]0;pwned\x07"


CLIPBOARD = "\x1b]52;c;cHduZWQ=\x07"


@FUZZ
@given(text=st.one_of(TEXT, st.text(alphabet=string.digits, max_size=40), st.none()))
def test_ascii_int_never_raises_and_reads_only_ascii_digits(text: str | None) -> None:
    number = ascii_int(text)
    if number is not None:
        assert text is not None and text.isascii() and text.isdigit() and str(number) == text.lstrip("0").rjust(1, "0")


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

