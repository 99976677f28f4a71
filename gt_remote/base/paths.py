"""Where gt-remote keeps local files, all private: directories 0700, files 0600."""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

APP = "gt-remote"


def _xdg(var: str, fallback: str) -> Path:
    value = os.environ.get(var)
    return Path(value) if value and os.path.isabs(value) else Path.home() / fallback


def config_file() -> Path:
    return _xdg("XDG_CONFIG_HOME", ".config") / APP / "config.toml"


def state_dir() -> Path:
    return private_dir(_xdg("XDG_STATE_HOME", ".local/state") / APP)


def runtime_dir() -> Path:
    """Sockets and locks. Without XDG_RUNTIME_DIR, a per-user directory under /tmp."""
    return private_dir(runtime_path())


def runtime_path() -> Path:
    """Where runtime_dir() is, without creating it."""
    value = os.environ.get("XDG_RUNTIME_DIR")
    return Path(value) / APP if value and os.path.isabs(value) else Path(tempfile.gettempdir()) / f"{APP}-{os.getuid()}"


def private_dir(path: Path) -> Path:
    """Create (or tighten) a directory only its owner may enter."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.stat()
    if info.st_uid != os.getuid():
        raise PermissionError(f"{path} belongs to another user; refusing to keep private files there")
    if info.st_mode & 0o077:
        path.chmod(0o700)
    return path


def write_private(path: Path, data: str) -> None:
    """Atomically replace `path` with `data`, mode 0600, so readers never see half a file."""
    private_dir(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(data)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def host_key(name: str) -> str:
    """A file-name-safe key for a host name; long or odd names get a hash suffix."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".") or "host"
    if safe != name or len(safe) > 40:
        safe = f"{safe[:32]}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"
    return safe


@dataclass(frozen=True)
class HostFiles:
    """The local files that belong to one host's supervisor."""

    name: str

    @property
    def key(self) -> str:
        return host_key(self.name)

    @property
    def record(self) -> Path:
        """The last known settings and status, for `status` after a crash."""
        return private_dir(state_dir() / "hosts") / f"{self.key}.json"

    @property
    def remote(self) -> Path:
        """How to reach the remote and which server gt-remote started there; kept after `down`
        so `down --stop-server` and `clean` can reconnect later. Removed by `clean`."""
        return private_dir(state_dir() / "remotes") / f"{self.key}.json"

    @property
    def build(self) -> Path:
        """The server build `gt-remote upgrade` installed, which `up` uses until the config names another."""
        return private_dir(state_dir() / "builds") / f"{self.key}.json"

    @property
    def log(self) -> Path:
        return private_dir(state_dir() / "logs") / f"{self.key}.log"

    @property
    def control(self) -> Path:
        return runtime_dir() / f"{self.key}.sock"

    @property
    def pid(self) -> Path:
        """Holds the supervisor's pid, and its flock for as long as the supervisor lives."""
        return runtime_dir() / f"{self.key}.pid"

    @property
    def lock(self) -> Path:
        """Serialises `up` and `down` for one host."""
        return runtime_dir() / f"{self.key}.lock"


def known_host_names() -> list[str]:
    """Every host with a record, in name order."""
    names = []
    for path in sorted((state_dir() / "hosts").glob("*.json")):
        try:
            names.append(json.loads(path.read_text())["host"])
        except (OSError, ValueError, KeyError):
            continue
    return sorted(names)


def remembered_host_names() -> list[str]:
    """Every host whose remote gt-remote has touched and not yet cleaned up, in name order."""
    names = []
    for path in sorted((state_dir() / "remotes").glob("*.json")):
        try:
            names.append(json.loads(path.read_text())["host"])
        except (OSError, ValueError, KeyError):
            continue
    return sorted(names)
