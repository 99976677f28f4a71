"""Where gt-remote keeps local files, all private: directories 0700, files 0600.

Without XDG_RUNTIME_DIR the runtime directory is /tmp/gt-remote-UID, a name in a directory
every local user can write. So a private directory is never taken on trust: its last
component is opened with O_NOFOLLOW|O_DIRECTORY (a symlink is refused, never followed),
its owner must be this user (a foreign one is refused, not chmod-ed), its mode is tightened
through that descriptor (never through a name), and its parent must not let others rename
it away (world-writable without the sticky bit). This is re-checked on every use: each path
property of HostFiles verifies its directory again. Files in it are opened with O_NOFOLLOW
(open_private), so a link left in a directory that once was open fails instead of
redirecting a write.
"""

from __future__ import annotations

import errno
import json
import os
import pwd
import re
import stat
from pathlib import Path
from typing import NamedTuple

from gt_remote.base.errors import UnsafeDirectory, UsageError
from gt_remote.base.sanitize import visible

APP = "gt-remote"


def _xdg(var: str, fallback: str) -> Path:
    value = os.environ.get(var)
    return Path(value) if value and os.path.isabs(value) else Path.home() / fallback


def config_file() -> Path:
    return _xdg("XDG_CONFIG_HOME", ".config") / APP / "config.toml"


def state_dir() -> Path:
    return private_dir(_xdg("XDG_STATE_HOME", ".local/state") / APP, "XDG_STATE_HOME")


def runtime_dir() -> Path:
    """Sockets and locks. Without XDG_RUNTIME_DIR, a per-user directory under /tmp."""
    return private_dir(runtime_path(), "XDG_RUNTIME_DIR")


def runtime_path() -> Path:
    """Where runtime_dir() is, without creating it."""
    value = os.environ.get("XDG_RUNTIME_DIR")
    if value and os.path.isabs(value):
        return Path(value) / APP
    import tempfile  # only here: every command reads these paths, and tempfile costs a shell's start-up time

    return Path(tempfile.gettempdir()) / f"{APP}-{os.getuid()}"


def private_dir(path: Path, setting: str = "") -> Path:
    """Create (or tighten) a directory only its owner may enter; refuse one another user could redirect.

    `setting` names the variable that moves it (XDG_RUNTIME_DIR...), for the fix in the error.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _check_parent(path, setting)
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
        fd = _open_dir(path, setting)
    except OSError as exc:
        raise UnsafeDirectory(f"cannot create the private directory {path}: {exc.strerror or exc}", _fix(path, setting)) from None
    try:
        info = os.fstat(fd)
        if info.st_uid != os.getuid():
            raise UnsafeDirectory(f"{path} belongs to {_user(info.st_uid)}, not to you; refusing to keep private files there", _fix(path, setting))
        if stat.S_IMODE(info.st_mode) & 0o077:
            os.fchmod(fd, 0o700)  # through the descriptor: never a chmod through a link
    finally:
        os.close(fd)
    return path


def _open_dir(path: Path, setting: str) -> int:
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if os.path.islink(path):
            raise UnsafeDirectory(f"{path} is a symbolic link (to {visible(os.readlink(path))}); refusing to follow it", _fix(path, setting)) from None
        if exc.errno == errno.ENOTDIR:
            raise UnsafeDirectory(f"{path} is not a directory; refusing to keep private files there", _fix(path, setting)) from None
        raise


def _check_parent(path: Path, setting: str) -> None:
    """A parent others may write, without the sticky bit, lets them swap the directory after the check."""
    info = os.stat(path.parent)
    if info.st_mode & stat.S_IWOTH and not info.st_mode & stat.S_ISVTX:
        raise UnsafeDirectory(f"{path.parent} is writable by every user (mode {stat.S_IMODE(info.st_mode):o}), so {path.name} in it cannot stay private", _fix(path, setting))


def _fix(path: Path, setting: str) -> str:
    if setting == "XDG_RUNTIME_DIR" and not os.environ.get("XDG_RUNTIME_DIR"):
        return f"set XDG_RUNTIME_DIR to a directory only you can use, or remove {path}"
    if setting:
        return f"remove {path} (gt-remote recreates it), or set {setting} to a directory only you can use"
    return f"remove {path} (gt-remote recreates it)"


def _user(uid: int) -> str:
    try:
        return f"another user ({visible(pwd.getpwuid(uid).pw_name)}, uid {uid})"
    except KeyError:
        return f"another user (uid {uid})"


def open_private(path: Path, flags: int, mode: int = 0o600) -> int:
    """os.open for a file in a private directory: never through a symlink, only a regular file of ours."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeDirectory(f"{path} is a symbolic link; refusing to follow it", f"remove {path}") from None
        raise
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid():
        os.close(fd)
        raise UnsafeDirectory(f"{path} is not a regular file of yours; refusing to use it", f"remove {path}")
    return fd


def check_socket_dir(socket_path: str) -> None:
    """A Unix socket's directory must be the user's own and closed to others: in a shared
    directory (/tmp, mode 1777) another user could take the name while the tunnel is down."""
    directory = os.path.dirname(socket_path) or "/"
    try:
        info = os.stat(directory)
    except OSError:
        return  # a missing directory: binding there fails with its own message
    if info.st_uid != os.getuid():
        problem = f"belongs to {_user(info.st_uid)}"
    elif info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        problem = f"is writable by other users (mode {stat.S_IMODE(info.st_mode):o}), who could take the name after 'down'"
    else:
        return
    name = visible(os.path.basename(socket_path))
    raise UsageError(
        f"refusing local socket unix://{visible(socket_path)}: its directory {visible(directory)} {problem}",
        f"put it in a directory only you can write, e.g. unix://$XDG_RUNTIME_DIR/{name} or unix://$HOME/.cache/{name}",
    )


def write_private(path: Path, data: str) -> None:
    """Atomically replace `path` with `data`, mode 0600, so readers never see half a file."""
    import tempfile

    private_dir(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # O_EXCL: never through a link
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(data)
        os.replace(tmp, path)  # replaces a link itself, never its target
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def machine_tag() -> str:
    """A short random name for this laptop, made once and kept in the state dir: two laptops
    with one hostname (WSL's, a distro's default) sharing a gaming PC must not share lease
    names, or they would take each other's back-tunnel listeners and close each other's
    streams at `down`. Created exclusively, so racing processes all read the one tag."""
    import secrets

    path = state_dir() / "machine-id"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(4) + "\n")
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd) as handle:
        tag = handle.read(64).strip()
    return tag if len(tag) == 8 and all(c in "0123456789abcdef" for c in tag) else "00000000"


def host_key(name: str) -> str:
    """A file-name-safe key for a host name; long or odd names get a hash suffix."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".") or "host"
    if safe != name or len(safe) > 40:
        import hashlib

        safe = f"{safe[:32]}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"
    return safe


class HostFiles(NamedTuple):
    """The local files that belong to one host's supervisor (a NamedTuple: light to define,
    on the path of every short command)."""

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
