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


def test_noisy_shell_message_names_the_files_that_print_with_their_guard() -> None:
    """sync names the start-up files found printing on the remote (#30.7), with the guard each
    needs; not the login shell's file unless that one prints."""
    from gt_remote.commands.sync import noisy_shell_error

    bash = str(noisy_shell_error("pc", "/bin/bash", ["~/.bashrc"]))
    assert "failed: ~/.bashrc on pc prints text" in bash and "[ -t 1 ]" in bash
    assert "~/.zshenv" in str(noisy_shell_error("pc", "/usr/bin/zsh", ["~/.zshenv"]))
    fish = str(noisy_shell_error("pc", "/usr/bin/fish", ["~/.config/fish/config.fish"]))
    assert "config.fish" in fish and "status is-interactive" in fish
    rc = str(noisy_shell_error("pc", "/bin/bash", ["~/.ssh/rc"]))
    assert "~/.ssh/rc on pc prints" in rc and "bashrc" not in rc
    both = str(noisy_shell_error("pc", "/usr/bin/fish", ["~/.ssh/rc", "~/.bashrc", "~/.config/fish/config.fish", "~/.profile"]))
    assert "~/.ssh/rc and ~/.config/fish/config.fish on pc print text" in both  # what a fish login reads for a command, not bash's or a login's files
    assert "in ~/.ssh/rc on pc, wrap what it prints in 'if [ -t 1 ]" in both and "in ~/.config/fish/config.fish on pc, wrap what it prints in 'if status is-interactive" in both
    assert "~/.profile on pc prints" in str(noisy_shell_error("pc", "/bin/dash", ["~/.profile"]))  # nothing a command reads prints: the suspects that do
    assert "~/.ssh/rc" in str(noisy_shell_error("pc", None, []))  # nothing found: every file that could

