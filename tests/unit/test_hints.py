"""Every command shown in a hint can be pasted: a host name a shell would split or run
(`my pc`, `a;touch x`) comes out quoted, an ordinary one exactly as before."""

from __future__ import annotations

import shlex

from gt_remote.base.errors import shell_word
from tests.conftest import Gt


def test_shell_word_leaves_ordinary_names_alone() -> None:
    for name in ("gaming-pc", "user@host", "host.example:22", "/abs/ccmux-server"):
        assert shell_word(name) == name
    assert shlex.split(shell_word("a;touch x")) == ["a;touch x"]


def test_hints_quote_the_host(gt: Gt) -> None:
    odd = "my pc;touch pwned"
    result = gt("logs", odd)
    assert result.returncode == 1
    assert f"bring it up first: gt-remote up {shlex.quote(odd)}" in result.stderr
    status = gt("status", odd)
    assert f"eval \"$(gt-remote up {shlex.quote(odd)})\"" in status.stderr
    plain = gt("logs", "gaming-pc")
    assert "bring it up first: gt-remote up gaming-pc\n" in plain.stderr
