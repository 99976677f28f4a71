"""`gt-remote reconnect` errors found without a remote."""

from __future__ import annotations

from tests.conftest import Gt


def test_reconnect_needs_exactly_one_of_host_or_all(gt: Gt) -> None:
    for args in ((), ("gaming-pc", "--all")):
        result = gt("reconnect", *args)
        assert result.returncode == 2
        assert result.stderr.strip() == "gt-remote: error: name one HOST or pass --all; e.g. 'gt-remote reconnect gaming-pc'"


def test_reconnect_of_a_host_that_is_not_up_fails_in_one_line(gt: Gt) -> None:
    result = gt("reconnect", "gaming-pc")
    assert result.returncode == 1
    assert result.stderr.strip() == "gt-remote: error: gaming-pc is not up; run 'eval \"$(gt-remote up gaming-pc)\"' first"

