"""Text from outside (the far side's shell and binaries, a control socket, a file another
user could write) made harmless before it reaches a terminal, a log, a record or `status`.

`visible()` works like OpenSSH's strnvis (the fix for CVE-2019-6109): every C0 control
but TAB, DEL, every C1 control, ESC included, and the Unicode line separators and bidi
overrides are written as backslash escapes (`\\x1b`, `\\n`, `\\u202e`), so a remote
`--version` printing `ESC ]0;title BEL` or an OSC 52 clipboard write shows as text and
cannot move the cursor, retitle the window, fill the clipboard or forge a line of output.
TAB stays: it cannot start a sequence, and log tails keep their columns. Backslashes stay
as they are (Windows paths); an escape shown is therefore not proof of a control byte, but
a control byte never gets through.

`ascii_int()` reads a number the far side sent: ASCII digits only (`str.isdigit` accepts
`²` and `٣`, which `int` then rejects or reads) and a length limit (`int` of thousands of
digits is slow, or refused since Python 3.11).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import logging  # imported when a formatter is made: the CLI stays light

_UNSAFE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_SHORT = {"\n": "\\n", "\r": "\\r"}
_DIGITS = re.compile(r"[0-9]+")
MAX_DIGITS = 19  # fits a signed 64-bit integer: pids, ports, sizes


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if char in _SHORT:
        return _SHORT[char]
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def visible(text: str) -> str:
    """`text` with every control character (but TAB) shown as an escape, as strnvis does."""
    return _UNSAFE.sub(_escape, text)


def visible_lines(text: str) -> str:
    """Like `visible`, but keeps the line breaks of a multi-line block (a table, a report)."""
    return "\n".join(visible(line) for line in text.split("\n"))


def visible_data(value: Any) -> Any:
    """Every string in a JSON-like value (dict keys too) made visible; other values unchanged."""
    if isinstance(value, str):
        return visible(value)
    if isinstance(value, dict):
        return {visible(key) if isinstance(key, str) else key: visible_data(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [visible_data(item) for item in value]
    return value


def ascii_int(text: str | None, max_digits: int = MAX_DIGITS) -> int | None:
    """The number in `text` if it is 1..max_digits ASCII digits and nothing else; else None."""
    if text is None or not 0 < len(text) <= max_digits or not _DIGITS.fullmatch(text):
        return None
    return int(text)


def visible_formatter(fmt: str) -> logging.Formatter:
    """A logging.Formatter whose message is made visible; a traceback after it keeps its lines."""
    import logging

    class VisibleFormatter(logging.Formatter):
        def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
            return visible(super().formatMessage(record))

    return VisibleFormatter(fmt)
