"""What a supervisor's own process leaves out: modules it loads and never uses.

Each host has a supervisor that lives as long as its tunnel, so what it loads and never uses
is paid on every host, all day. Measured in make bench's scale section, two things matter.

- Python's bindings to the system's OpenSSL. `ssl` and `_hashlib` load the system's libssl
  and libcrypto: about 5 MiB of RSS per supervisor. The supervisor needs neither. It never
  speaks TLS. asyncssh does its ciphers, key exchange, signatures and key derivation through
  the `cryptography` package, which carries its own OpenSSL. From hashlib it wants only md5,
  sha1, sha2 and sha3, and CPython has built-in versions of those. Without `_hashlib`,
  hashlib uses them and hmac uses its pure-Python construction. asyncssh and OpenSSH still
  agree on an AEAD cipher first, which needs no HMAC. Where the supervisor hashes a whole
  build, it does so on cryptography's OpenSSL (gt_remote/remote/digest.py).
- asyncssh's X.509 support, when it cannot load anyway. That support needs pyOpenSSL. Without
  pyOpenSSL, asyncssh's attempt still imports `cryptography.x509` (and the stdlib's email
  package) before it fails, and those stay loaded: about 1.3 MiB for nothing. This is only
  left out when pyOpenSSL is not installed, so asyncssh ends up the same either way.

Only a process that is a supervisor calls this, before it imports asyncio:
`python -m gt_remote.runtime.supervisor`, which `up` starts detached, and `up --foreground`, which a
service manager runs. A process that only imports the supervisor, such as the tests, keeps
its modules.
"""

from __future__ import annotations

import sys

OPENSSL_MODULES = ("ssl", "_ssl", "_hashlib")
ASYNCSSH_X509 = "asyncssh.crypto.x509"


def leave_out_unused() -> None:
    """Everything this module leaves out. Call it before asyncio or asyncssh is imported."""
    leave_out_openssl()
    leave_out_x509_that_cannot_load()


def leave_out_openssl() -> None:
    """Make `import ssl` / `import _hashlib` fail with ImportError. hashlib, hmac and asyncio all
    handle that. This only works before those modules are imported. A module that is already
    loaded is kept, because its users hold references to it."""
    for name in OPENSSL_MODULES:
        _block(name)


def leave_out_x509_that_cannot_load() -> None:
    """Without pyOpenSSL, asyncssh's X.509 module would fail to import after it had loaded
    cryptography.x509. Make it fail at once, with the ImportError that asyncssh handles."""
    import importlib.util

    if importlib.util.find_spec("OpenSSL") is None:
        _block(ASYNCSSH_X509)


def _block(name: str) -> None:
    if name not in sys.modules:
        sys.modules[name] = None  # type: ignore[assignment]  # None in sys.modules: "import fails", by design of the import system
