"""Hashing a local server build in the supervisor's process, on the OpenSSL that
cryptography carries.

The supervisor's process leaves out hashlib's OpenSSL (gt_remote/base/lean.py), and hashlib's
built-in SHA-256 is about 6 times slower: 255 against 1,600 MB/s on the bench machine. That is
0.1 s more for each `up --server-binary` with a 25 MB build. cryptography is loaded in that
process anyway, for asyncssh.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes

from gt_remote.base import builds


class OpenSslSha256:
    """hashlib's SHA-256 interface (update, hexdigest) over cryptography's."""

    def __init__(self) -> None:
        self._hash = hashes.Hash(hashes.SHA256())

    def update(self, data: bytes, /) -> None:
        self._hash.update(data)

    def hexdigest(self) -> str:
        return self._hash.finalize().hex()


def file_sha256(path: str) -> str:
    """builds.file_sha256, on OpenSSL."""
    return builds.file_sha256(path, OpenSslSha256)


def file_digest(path: str) -> str:
    """builds.file_digest, on OpenSSL."""
    return builds.file_digest(path, OpenSslSha256)
