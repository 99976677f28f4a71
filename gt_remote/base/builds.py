"""Naming a server build by its content, without touching the remote.

Kept apart from bootstrap.probe (which needs asyncssh) because `up` checks an offered
binary against a running tunnel's build in the light command process.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol


class Sha256(Protocol):
    """What file_sha256 needs of a SHA-256: hashlib's interface."""

    def update(self, data: bytes, /) -> None: ...

    def hexdigest(self) -> str: ...


def file_sha256(path: str, new: Callable[[], Sha256] | None = None) -> str:
    """The whole SHA-256 of a file: what the remote checks an upload against. `new` makes the
    hash; hashlib's by default (the supervisor passes one that uses OpenSSL: gt_remote/remote/digest.py)."""
    if new is None:
        import hashlib  # only `up --server-binary` and `upgrade` hash a file; the other commands skip its cost

        new = hashlib.sha256
    sha = new()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha.update(block)
    return sha.hexdigest()


def file_digest(path: str, new: Callable[[], Sha256] | None = None) -> str:
    """Names the versioned install directory, so one binary is uploaded once."""
    return file_sha256(path, new)[:16]


def build_of(path: str | None) -> str | None:
    """`.../gt-remote/servers/<hash>/ccmux-server` -> `<hash>`; None for other paths."""
    parts = (path or "").split("/")
    return parts[-2] if len(parts) >= 3 and "/".join(parts[-4:-2]) == "gt-remote/servers" else None
