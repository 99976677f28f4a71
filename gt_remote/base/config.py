"""Host settings: `[hosts.NAME]` tables in the TOML config, overridden by command-line options.
The file itself is read and checked by gt_remote/base/config_file.py."""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gt_remote.base.addresses import Address, UnixAddress, normalize_local, parse_address, require_loopback
from gt_remote.base.backs import parse_backs
from gt_remote.base.config_file import HOST_KEYS as HOST_KEYS  # where the file is read: light, for `pick` and completion
from gt_remote.base.config_file import load_config as load_config
from gt_remote.base.errors import ConfigError, UsageError
from gt_remote.base.paths import check_socket_dir, runtime_path

DEFAULT_REMOTE_PORT = 9999
DEFAULT_SERVER = "ccmux-server"
DEFAULT_KEEPALIVE = 5.0
DEFAULT_RESUME_WINDOW = 900.0
SERVER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class HostSettings:
    """Everything a supervisor needs to bring one host up; JSON-able for the child process."""

    name: str
    destination: str
    remote_port: int = DEFAULT_REMOTE_PORT
    local_url: str = ""
    server: str = DEFAULT_SERVER
    server_binary: str | None = None
    install_command: str | None = None
    keepalive: float = DEFAULT_KEEPALIVE
    ssh_config: str | None = None
    restart_server: bool = False
    sync: tuple[str, ...] = field(default_factory=tuple)
    resume: bool = True  # resumable streams through the remote relay, where it can run
    resume_window: float = DEFAULT_RESUME_WINDOW
    install_dir: str | None = None  # remote dir for server builds and the relay (<dir>/gt-remote/...); None: ~/.local/share
    back: tuple[str, ...] = field(default_factory=tuple)  # back tunnels' specs, canonical (gt_remote/base/backs.py)
    transport: str = "auto"  # how streams reach the relay: auto, forward (sshd's channels) or stdio (an exec channel)

    @property
    def local(self) -> Address:
        return parse_address(self.local_url)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> HostSettings:
        data = json.loads(text)
        data["sync"] = tuple(data.get("sync", ()))
        data["back"] = tuple(data.get("back", ()))
        return cls(**data)


def resolve(host: str, config: Mapping[str, Mapping[str, Any]], overrides: Mapping[str, Any], ssh_config: str | None) -> HostSettings:
    """Merge defaults < config table < command line, and validate the result."""
    merged: dict[str, Any] = dict(config.get(host, {}))
    merged.update({key: value for key, value in overrides.items() if value is not None})
    remote_port = _port(merged.get("remote_port", DEFAULT_REMOTE_PORT))
    local = _local(merged.get("local"), remote_port)
    return HostSettings(
        name=host,
        destination=_text(merged.get("ssh", host), "ssh"),
        remote_port=remote_port,
        local_url=local.url,
        server=_server(merged.get("server", DEFAULT_SERVER)),
        server_binary=_binary(merged.get("server_binary")),
        install_command=_optional_text(merged.get("install_command"), "install_command"),
        keepalive=_keepalive(merged.get("keepalive", DEFAULT_KEEPALIVE)),
        ssh_config=ssh_config,
        restart_server=bool(merged.get("restart_server", False)),
        sync=_sync(merged.get("sync", ())),
        resume=_flag(merged.get("resume", True), "resume"),
        resume_window=_resume_window(merged.get("resume_window", DEFAULT_RESUME_WINDOW)),
        install_dir=install_dir_value(merged.get("install_dir")),
        back=parse_backs(merged.get("back", ())),
        transport=_transport(merged.get("transport", "auto")),
    )


TRANSPORTS = ("auto", "forward", "stdio")


def _transport(value: Any) -> str:
    if value not in TRANSPORTS:
        raise UsageError(f"transport {value!r} is not one of {', '.join(TRANSPORTS)}", "use --transport auto (the default), forward or stdio")
    return str(value)


FIELD_OF_KEY = {"ssh": "destination", "local": "local_url"}  # the config's and options' names that differ from HostSettings'


def given_fields(table: Mapping[str, Any], overrides: Mapping[str, Any]) -> frozenset[str]:
    """The HostSettings fields the user set, in the host's config table or on the command line:
    what `up` compares with a running tunnel. Every other field holds a default, and a default
    is no request."""
    keys = set(table) | {key for key, value in overrides.items() if value is not None}
    return frozenset(FIELD_OF_KEY.get(key, key) for key in keys)


def _port(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise UsageError(f"remote port {value!r} is not a port number", "use a number from 1 to 65535, e.g. --remote-port 9999")
    return value


def _local(value: Any, remote_port: int) -> Address:
    if value is None:
        return parse_address(f"tcp://127.0.0.1:{remote_port}")
    address = normalize_local(require_loopback(parse_address(_text(value, "local"))))
    if isinstance(address, UnixAddress):
        _outside_own_files(address)
        check_socket_dir(address.path)
    return address


def _outside_own_files(address: UnixAddress) -> None:
    """gt-remote's runtime directory holds each host's control socket (HOST.sock), which
    would silently replace a listener of the same name: keep users' sockets out of it."""
    own = Path(os.path.realpath(runtime_path()))
    if Path(os.path.realpath(os.path.dirname(address.path))).is_relative_to(own):
        raise UsageError(
            f"local socket {address.url} is inside {own}, where gt-remote keeps its own control sockets",
            f"pick a path outside it, e.g. unix://{own.parent}/{os.path.basename(address.path)}",
        )


def _server(value: Any) -> str:
    name = _text(value, "server")
    if not SERVER_NAME.match(name):
        raise UsageError(f"server name {name!r} is not a plain program name", "use ccmux-server or fugue-server")
    return name


def _binary(value: Any) -> str | None:
    if value is None:
        return None
    text = _text(value, "server_binary")
    try:
        path = Path(text).expanduser()  # `~nobody-here/x` raises RuntimeError
        if path.is_file():
            return str(path.resolve())
    except (OSError, RuntimeError, ValueError):  # too long a name, an unknown ~user, a NUL
        path = Path(text)
    raise UsageError(f"server binary {path} does not exist", "pass the path of the ccmux-server you built for the remote")


def _positive(value: Any) -> bool:
    """A finite number above zero: TOML and float() also read inf and nan."""
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def _sync(value: Any) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"sync must be a list of paths, not {value!r}", 'write sync = ["~/rig"]')
    return tuple(_text(item, "sync") for item in value)


def _keepalive(value: Any) -> float:
    if not _positive(value):
        raise UsageError(f"keepalive {value!r} is not a positive number of seconds", "use e.g. --keepalive 5")
    return float(value)


MAX_RESUME_WINDOW = 24 * 3600.0  # what the remote relay accepts


def _resume_window(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= MAX_RESUME_WINDOW:  # NaN fails too
        raise UsageError(
            f"resume window {value!r} is not a positive number of seconds up to {MAX_RESUME_WINDOW:g} (a day)",
            "use e.g. --resume-window 900 (15 minutes)",
        )
    return float(value)


def install_dir_value(value: Any) -> str | None:
    """A remote directory: absolute, ~/..., or relative to the remote home; no control characters."""
    if value is None:
        return None
    text = _text(value, "install_dir")
    if any(ord(char) < 32 or ord(char) == 127 for char in text):
        raise UsageError(f"install dir {text!r} holds a control character", "name a plain directory, e.g. --install-dir /opt/gt")
    return text.rstrip("/") or "/"


def _flag(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false, not {value!r}", f"write {key} = true or {key} = false")
    return value


def _text(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key} must be a non-empty string, not {value!r}", "quote it in the config file")
    return value


def _optional_text(value: Any, key: str) -> str | None:
    return None if value is None else _text(value, key)
