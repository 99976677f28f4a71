"""The resume window is checked before any connection: on the command line and in the config."""

from __future__ import annotations

from tests.conftest import Gt
from tests.helpers import one_error_line


def test_bad_resume_window_is_one_line_error(gt: Gt) -> None:
    result = gt("up", "gaming-pc", "--resume-window", "0")
    assert result.returncode == 2
    assert "resume window 0.0 is not a positive number of seconds" in one_error_line(result.stderr)


def test_infinite_nan_or_too_long_resume_window_is_refused(gt: Gt) -> None:
    """The relay accepts at most a day; inf and nan would never end a stream."""
    for value in ("inf", "nan", "86401"):
        result = gt("up", "gaming-pc", "--resume-window", value)
        assert result.returncode == 2, (value, result.stderr)
        assert "is not a positive number of seconds up to 86400" in one_error_line(result.stderr)


def test_resume_window_in_the_config_is_checked_too(gt: Gt) -> None:
    config = gt.home / ".config/gt-remote/config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text('[hosts.gaming-pc]\nresume_window = inf\n')
    result = gt("up", "gaming-pc")
    assert result.returncode == 2, result.stderr
    assert "resume window inf is not a positive number of seconds" in one_error_line(result.stderr)

