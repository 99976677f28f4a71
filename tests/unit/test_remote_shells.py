"""Reading a remote login shell's output, without a remote: whatever precedes the marker is
never an answer, output without it is a typed error, and a noisy shell is named with its start-up
files."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gt_remote.base.errors import GtRemoteError
from gt_remote.remote import scripts as remote_scripts
from gt_remote.remote.scripts import ascii_int


def test_ascii_int() -> None:
    assert ascii_int("1234") == 1234
    assert ascii_int("²") is None and ascii_int("٣") is None
    assert ascii_int("9" * 5000) is None and ascii_int("9" * 20) is None and ascii_int("9" * 11, 10) is None and ascii_int("9" * 11, 12) == 99999999999
    assert ascii_int("") is None and ascii_int(None) is None and ascii_int("-1") is None and ascii_int(" 1") is None


# --- the parser, fuzzed ---------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(noise=st.binary(max_size=4096), answers=st.dictionaries(st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True), st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), max_size=40), max_size=5))
def test_whatever_precedes_the_marker_never_becomes_an_answer(noise: bytes, answers: dict[str, str]) -> None:
    token = "0123456789abcdef"
    body = "".join(f"{key}={value}\n" for key, value in answers.items()).encode()
    result = remote_scripts._result(0, noise + b"\n" + (remote_scripts.MARKER_PREFIX + token).encode() + b"\n" + body, b"", token)
    assert result.fields == answers


@settings(max_examples=200, deadline=None)
@given(output=st.binary(max_size=2048), exit_status=st.one_of(st.none(), st.integers(0, 255)))
def test_output_without_the_marker_is_a_typed_error(output: bytes, exit_status: int | None) -> None:
    with pytest.raises(GtRemoteError):
        remote_scripts._result(exit_status, output.replace(remote_scripts.MARKER_PREFIX.encode(), b""), output, "0123456789abcdef")


@given(st.text(max_size=30))
def test_ascii_int_takes_only_ascii_digits(text: str) -> None:
    value = remote_scripts.ascii_int(text)
    assert value is None or (text.isascii() and text.isdigit() and value == int(text))


def test_noisy_shell_message_names_each_start_up_file() -> None:
    from gt_remote.commands.sync import noisy_shell_error

    assert "~/.bashrc" in str(noisy_shell_error("pc", "/bin/bash")) and "[ -t 1 ]" in str(noisy_shell_error("pc", "/bin/bash"))
    assert "~/.zshenv" in str(noisy_shell_error("pc", "/usr/bin/zsh"))
    assert "config.fish" in str(noisy_shell_error("pc", "/usr/bin/fish")) and "status is-interactive" in str(noisy_shell_error("pc", "/usr/bin/fish"))
    assert "~/.ssh/rc" in str(noisy_shell_error("pc", None))

