"""What a supervisor's process leaves out (gt_remote/base/lean.py), in fresh interpreters:
Python's OpenSSL bindings always, asyncssh's X.509 support only where it could not load.
The supervisor's SSH on the result is tested for real in test_supervisor.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPORT = """
import json, sys
{setup}
import gt_remote.runtime.supervisor
import asyncssh.crypto, hashlib, hmac
loaded = lambda name: sys.modules.get(name) is not None
print(json.dumps({{
    "ssl": loaded("ssl") or loaded("_ssl"),
    "hashlib_openssl": loaded("_hashlib"),
    "cryptography_x509": loaded("cryptography.x509"),
    "asyncssh_x509": hasattr(asyncssh.crypto, "X509Certificate"),
    "sha256": hashlib.sha256(b"abc").hexdigest(),
    "hmac": hmac.new(b"key", b"abc", hashlib.sha256).hexdigest(),
}}))
"""
TRIMMED = "from gt_remote.base.lean import leave_out_unused; leave_out_unused()"
SHA256_ABC = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
HMAC_KEY_ABC = "9c196e32dc0175f86f4b1cb89289d6619de6bee699e4c378e68309ed97a1a6ab"


def imports(setup: str, pythonpath: Path | None = None) -> dict[str, object]:
    env = {**os.environ}
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(pythonpath), env.get("PYTHONPATH", "")])
    result = subprocess.run([sys.executable, "-c", REPORT.format(setup=setup)], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def test_a_supervisor_leaves_out_pythons_openssl_and_still_hashes() -> None:
    lean = imports(TRIMMED)
    assert lean["ssl"] is False and lean["hashlib_openssl"] is False
    assert lean["sha256"] == SHA256_ABC and lean["hmac"] == HMAC_KEY_ABC  # CPython's built-in hashes, hmac's own construction


def test_without_pyopenssl_the_x509_attempt_is_skipped_and_asyncssh_ends_up_the_same() -> None:
    lean, plain = imports(TRIMMED), imports("")
    assert plain["asyncssh_x509"] is False and plain["cryptography_x509"] is True  # loaded for an attempt that failed
    assert lean["asyncssh_x509"] is False and lean["cryptography_x509"] is False


def test_with_pyopenssl_asyncssh_keeps_its_x509_support(tmp_path: Path) -> None:
    """A stand-in pyOpenSSL (asyncssh's x509 module only imports `crypto` from it at first)."""
    (tmp_path / "OpenSSL").mkdir()
    (tmp_path / "OpenSSL" / "__init__.py").write_text("")
    (tmp_path / "OpenSSL" / "crypto.py").write_text("")
    lean = imports(TRIMMED, pythonpath=tmp_path)
    assert lean["asyncssh_x509"] is True and lean["cryptography_x509"] is True
