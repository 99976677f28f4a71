"""The config file itself: `[hosts.NAME]` tables read from TOML, its owner and its keys checked.

Apart from gt_remote/base/config.py (which turns a table into the settings of a tunnel) so that
the commands that only read tables, `pick` and completion, load neither those settings'
dataclass nor the back tunnels' parser: `pick` runs at each polecat's spawn. For the same
reason `pick` reads the tables through `cached_tables`: the TOML parser's import alone is a
tenth of its start-up.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from gt_remote.base.errors import ConfigError, GtRemoteError
from gt_remote.base.paths import private_dir, state_dir
from gt_remote.base.placements import read_json, write_whole
from gt_remote.base.pool import POOL_KEYS, pool_settings

# The keys of a tunnel's settings (each names a HostSettings field); POOL_KEYS are `pick`'s.
HOST_KEYS = {"ssh", "remote_port", "local", "server", "server_binary", "install_command", "keepalive", "sync", "resume", "resume_window", "install_dir", "back", "transport"}
TABLE_KEYS = HOST_KEYS | set(POOL_KEYS)


def load_config(path: Path) -> dict[str, dict[str, Any]]:
    """The `[hosts.*]` tables; a missing file is an empty config, a broken one an error."""
    import tomllib  # only the commands that read the config, never the supervisor, pay for the parser

    try:
        with path.open("rb") as handle:
            _check_config_owner(path, os.fstat(handle.fileno()))
            data = tomllib.load(handle)
    except FileNotFoundError:
        return {}
    except UnicodeDecodeError as exc:
        raise ConfigError(f"cannot read config {path}: not UTF-8 text ({exc.reason} at byte {exc.start})", "save it as UTF-8 or pass --config FILE") from None
    except RecursionError:
        raise ConfigError(f"cannot read config {path}: values nested too deeply", "fix the TOML or pass --config FILE") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config {path}: {exc}", "fix the TOML syntax or pass --config FILE") from exc
    hosts = data.get("hosts", {})
    if not isinstance(hosts, dict):
        raise ConfigError(f"{path}: 'hosts' must be a table of [hosts.NAME] tables", "see docs/usage.md")
    for name, table in hosts.items():
        _check_table(path, name, table)
    return hosts


def _check_config_owner(path: Path, info: os.stat_result) -> None:
    """As ssh does for its config: one another user may write could run commands as you
    (install_command, ssh), so it must be yours (or root's) and writable by nobody else."""
    if info.st_uid not in (os.getuid(), 0) or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ConfigError(
            f"config {path} is writable by another user (owner uid {info.st_uid}, mode {stat.S_IMODE(info.st_mode):o}); refusing to run what it says",
            f"make it yours and private: chmod go-w {path}",
        )


def _check_table(path: Path, name: str, table: object) -> None:
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [hosts.{name}] must be a table", "see docs/usage.md")
    unknown = sorted(set(table) - TABLE_KEYS)
    if unknown:
        raise ConfigError(
            f"{path}: [hosts.{name}] has unknown key(s) {', '.join(unknown)}",
            f"use only {', '.join(sorted(TABLE_KEYS))}",
        )
    try:
        pool_settings(name, table)  # a wrong pool, max_sessions or weight is said by every command that reads the config
    except ConfigError as error:
        raise ConfigError(f"{path}: {error.cause}", error.fix) from None


def cached_tables(path: Path) -> dict[str, dict[str, Any]]:
    """load_config's tables, from a private copy kept in the state dir while the file is
    unchanged (the same file, size, modification and change times): the TOML parser is then
    not even imported. The file's owner and mode are checked every time."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return {}
    except OSError:
        return load_config(path)  # says what is wrong with it
    try:
        info = os.fstat(fd)
    finally:
        os.close(fd)
    _check_config_owner(path, info)
    key = [os.path.abspath(path), info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns]
    cache = private_dir(state_dir() / "cache") / "config.json"
    kept = read_json(cache)
    if kept.get("key") == key and isinstance(kept.get("hosts"), dict):
        return dict(kept["hosts"])
    hosts = load_config(path)
    try:
        write_whole(cache, json.dumps({"key": key, "hosts": hosts}))
    except (TypeError, ValueError, OSError, GtRemoteError):
        pass  # a value JSON cannot hold (a TOML date), or no room: parsed again next time
    return hosts
