"""Pure logic: config merging and validation, and the reconnect backoff."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from gt_remote.base.addresses import parse_address
from gt_remote.base.config import HostSettings, load_config, resolve
from gt_remote.base.errors import AuthRefused, ConfigError, ConnectFailed, GtRemoteError, UsageError
from gt_remote.tunnel.policy import FAST_JITTER, FAST_PHASE, FAST_WAIT, INITIAL_WAIT, JITTER, MAX_WAIT, reconnect_policy
from tests.unit.strategies import FUZZ, JSON_LEAF, TEXT


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


# --- the config loader -----------------------------------------------------------------------


def _check_settings(result: HostSettings) -> None:
    assert 1 <= result.remote_port <= 65535
    assert math.isfinite(result.keepalive) and result.keepalive > 0
    assert math.isfinite(result.resume_window) and result.resume_window > 0
    assert all(isinstance(item, str) and item for item in result.sync)
    parse_address(result.local_url)


TOML_VALUE = st.one_of(JSON_LEAF, st.lists(JSON_LEAF, max_size=3))


TABLE = st.dictionaries(st.sampled_from(["ssh", "remote_port", "local", "server", "server_binary", "install_command", "keepalive", "sync", "resume", "resume_window", "unknown"]), TOML_VALUE, max_size=6)


def _toml_snippets() -> st.SearchStrategy[str]:
    keys = st.sampled_from(["ssh", "remote_port", "local", "keepalive", "resume_window", "sync", "hosts", "server"])
    values = st.sampled_from(['"x"', "1", "-0", "inf", "nan", "1e400", "[1, [2]]", "{a = 1}", '"\\u001b"', "true", "1979-05-27", "0x10", '"""\n"""', "'²'"])
    line = st.one_of(st.tuples(keys, values).map(" = ".join), st.sampled_from(["[hosts.gaming-pc]", "[hosts]", "[[hosts.a]]", "[hosts.'x y']", "hosts = 1"]), TEXT)
    return st.lists(line, max_size=8).map("\n".join)


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


def test_first_attempt_is_immediate_and_retries_stay_quick_early_in_an_outage() -> None:
    """A short outage (Wi-Fi, a partition) must not end seconds before the next attempt."""
    transient = ConnectFailed("lost", "retry")
    sleeps, attempts, error = run_policy([transient] * 40 + [None])
    assert error is None and attempts == 41 and len(sleeps) == 40
    assert sleeps[0] < INITIAL_WAIT + FAST_JITTER + 0.01
    assert max(sleeps) <= FAST_WAIT + FAST_JITTER + 0.01


def test_a_long_outage_backs_off_to_the_cap() -> None:
    transient = ConnectFailed("lost", "retry")
    sleeps, _, _ = run_policy([transient] * 600 + [None])
    waited, first_slow = 0.0, 0
    while waited < FAST_PHASE:
        waited += sleeps[first_slow]
        first_slow += 1
    later = sleeps[first_slow:]
    assert later[5] > later[0] * 8  # it grows...
    assert max(later) <= MAX_WAIT + JITTER + 0.01  # ...to the cap, no further
    assert later[-1] >= MAX_WAIT


def test_a_fresh_policy_after_success_starts_from_zero() -> None:
    transient = ConnectFailed("lost", "retry")
    run_policy([transient] * 8 + [None])
    sleeps, _, _ = run_policy([None])  # the next loss after a working link
    assert sleeps == []


def test_final_errors_are_not_retried() -> None:
    sleeps, attempts, error = run_policy([AuthRefused("refused", "add key"), None])
    assert attempts == 1 and sleeps == [] and isinstance(error, AuthRefused)


def test_resume_settings_from_config_and_command_line(tmp_path: Path) -> None:
    assert (resolve("pc", {}, {}, None).resume, resolve("pc", {}, {}, None).resume_window) == (True, 900.0)
    config = tmp_path / "c.toml"
    config.write_text("[hosts.pc]\nresume = false\nresume_window = 60\n")
    settings = resolve("pc", load_config(config), {}, None)
    assert (settings.resume, settings.resume_window) == (False, 60.0)
    assert resolve("pc", load_config(config), {"resume_window": 5}, None).resume_window == 5.0
    assert HostSettings.from_json(settings.to_json()) == settings


@pytest.mark.parametrize(("overrides", "error", "message"), [
    ({"resume_window": 0}, UsageError, "resume window 0 is not a positive number"),
    ({"resume_window": True}, UsageError, "resume window True"),
    ({"resume": "no"}, ConfigError, "resume must be true or false"),
])
def test_bad_resume_settings(overrides: dict[str, object], error: type[GtRemoteError], message: str) -> None:
    with pytest.raises(error, match=message):
        resolve("pc", {}, overrides, None)


@FUZZ
@example(table={"server_binary": "~nobody-here/ccmux-server"})  # expanduser's RuntimeError
@example(table={"server_binary": "/" + "a" * 5000})  # ENAMETOOLONG from is_file()
@example(table={"sync": 5})  # iterated: TypeError
@example(table={"keepalive": math.nan})
@example(table={"resume_window": math.inf})
@given(table=TABLE)
def test_resolve_takes_any_table_of_values(table: dict[str, Any]) -> None:
    try:
        result = resolve("gaming-pc", {"gaming-pc": table}, {}, None)
    except UsageError:
        return  # ConfigError is one
    _check_settings(result)


@FUZZ
@example(content=b"\xff\xfe")  # not UTF-8: UnicodeDecodeError got past the TOML error handler
@example(content=b"[hosts.a]\nsync = 5\nkeepalive = nan\n")
@given(content=st.one_of(st.binary(max_size=200), _toml_snippets().map(lambda t: t.encode("utf-8", "surrogatepass"))))
def test_config_loader_takes_any_file(content: bytes, tmp_path_factory: pytest.TempPathFactory) -> None:
    path = tmp_path_factory.getbasetemp() / "fuzz-config.toml"
    path.write_bytes(content)
    path.chmod(0o600)
    try:
        hosts = load_config(path)
    except ConfigError as error:
        assert str(path) in error.cause
        return
    for name in hosts:
        try:
            _check_settings(resolve(name, hosts, {}, None))
        except UsageError:
            pass


def test_deeply_nested_config_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("x = " + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(ConfigError):
        load_config(path)

