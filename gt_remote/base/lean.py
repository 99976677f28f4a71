"""What a supervisor's own process leaves out: Python's bindings to the system's OpenSSL.

Each host has a supervisor that lives as long as its tunnel, so what it loads and never uses
is paid on every host, all day. `ssl` and `_hashlib` load the system's libssl and libcrypto:
about 5 MiB of RSS per supervisor, measured in make bench's scale section. The supervisor
needs neither. It never speaks TLS. asyncssh does its ciphers, key exchange, signatures and
key derivation through the `cryptography` package, which carries its own OpenSSL. From
hashlib it wants only md5, sha1, sha2 and sha3, and CPython has built-in versions of those.
Without `_hashlib`, hashlib uses those built-in versions and hmac uses its pure-Python
construction. Nothing else changes: asyncssh and OpenSSH still agree on an AEAD cipher
first, which needs no HMAC.

Only a process that is a supervisor calls this, before it imports asyncio:
`python -m gt_remote.supervisor`, which `up` starts detached, and `up --foreground`, which a
service manager runs. A process that only imports the supervisor, such as the tests, keeps
its modules.
"""

from __future__ import annotations

import sys

OPENSSL_MODULES = ("ssl", "_ssl", "_hashlib")


def leave_out_openssl() -> None:
    """Make `import ssl` / `import _hashlib` fail with ImportError, which hashlib, hmac and
    asyncio all handle. This only works before those modules are imported. A module that is
    already loaded is kept, because its users hold references to it."""
    for name in OPENSSL_MODULES:
        if name not in sys.modules:
            sys.modules[name] = None  # type: ignore[assignment]  # None in sys.modules: "import fails", by design of the import system
