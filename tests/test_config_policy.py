"""Pure logic: config merging and validation, and the reconnect backoff."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gt_remote.base.config import HostSettings, load_config, resolve
from gt_remote.base.errors import AuthRefused, ConfigError, ConnectFailed, GtRemoteError, UsageError
from gt_remote.tunnel.policy import MAX_WAIT, reconnect_policy


def test_defaults() -> None:
    settings = resolve("gaming-pc", {}, {}, None)
    assert (settings.destination, settings.remote_port, settings.local_url, settings.server, settings.keepalive) == (
        "gaming-pc", 9999, "tcp://127.0.0.1:9999", "ccmux-server", 5.0)


def test_command_line_overrides_config(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[hosts.pc]\nssh = "me@pc.lan"\nremote_port = 7000\nkeepalive = 2\n')
    settings = resolve("pc", load_config(config), {"remote_port": 7001}, "/etc/ssh_config")
    assert settings.destination == "me@pc.lan" and settings.remote_port == 7001 and settings.keepalive == 2.0
    assert settings.local_url == "tcp://127.0.0.1:7001" and settings.ssh_config == "/etc/ssh_config"
    assert HostSettings.from_json(settings.to_json()) == settings


def test_local_socket_inside_the_runtime_dir_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """There it would be replaced by a host's control socket (HOST.sock): refused, not clobbered."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    for path in (tmp_path / "gt-remote" / "gaming-pc.sock", tmp_path / "gt-remote" / "sub" / "x.sock"):
        with pytest.raises(UsageError, match="where gt-remote keeps its own control sockets"):
            resolve("gaming-pc", {}, {"local": f"unix://{path}"}, None)
    assert resolve("gaming-pc", {}, {"local": f"unix://{tmp_path}/gaming-pc.sock"}, None).local_url == f"unix://{tmp_path}/gaming-pc.sock"


def test_localhost_is_bound_and_exported_as_127_0_0_1() -> None:
    assert resolve("h", {}, {"local": "tcp://localhost:5000"}, None).local_url == "tcp://127.0.0.1:5000"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"remote_port": 0}, "is not a port number"),
        ({"keepalive": -1}, "positive number"),
        ({"server": "ccmux-server; rm -rf ~"}, "not a plain program name"),
        ({"server_binary": "/nonexistent/ccmux-server"}, "does not exist"),
        ({"local": "tcp://10.0.0.1:9999"}, "not loopback"),
    ],
)
def test_bad_settings_are_usage_errors(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        resolve("h", {}, overrides, None)


def test_broken_config_files(tmp_path: Path) -> None:
    assert load_config(tmp_path / "missing.toml") == {}
    bad = tmp_path / "bad.toml"
    bad.write_text("[hosts.pc\n")
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(bad)
    bad.write_text("[hosts.pc]\nbogus = 1\n")
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(bad)


def run_policy(outcomes: list[GtRemoteError | None]) -> tuple[list[float], int, BaseException | None]:
    """Drive the policy with scripted attempt outcomes; return the sleeps it asked for."""
    sleeps: list[float] = []
    attempts = 0

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    async def scenario() -> BaseException | None:
        nonlocal attempts
        try:
            async for attempt in reconnect_policy(lambda error, at: None, sleep=fake_sleep):
                with attempt:
                    outcome = outcomes[attempts]
                    attempts += 1
                    if outcome is not None:
                        raise outcome
            return None
        except GtRemoteError as error:
            return error

    error = asyncio.run(scenario())
    return sleeps, attempts, error


def test_first_attempt_is_immediate_and_backoff_grows_to_the_cap() -> None:
    transient = ConnectFailed("lost", "retry")
    sleeps, attempts, error = run_policy([transient] * 14 + [None])
    assert error is None and attempts == 15 and len(sleeps) == 14
    assert sleeps[0] < 1.0
    assert sleeps[6] > sleeps[0] * 8  # it grows...
    assert max(sleeps) <= MAX_WAIT + 0.01  # ...to the cap, no further


def test_a_fresh_policy_after_success_starts_from_zero() -> None:
    transient = ConnectFailed("lost", "retry")
    run_policy([transient] * 8 + [None])
    sleeps, _, _ = run_policy([None])  # the next loss after a working link
    assert sleeps == []


def test_final_errors_are_not_retried() -> None:
    sleeps, attempts, error = run_policy([AuthRefused("refused", "add key"), None])
    assert attempts == 1 and sleeps == [] and isinstance(error, AuthRefused)
