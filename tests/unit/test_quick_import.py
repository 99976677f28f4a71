"""The supervisor imports asyncssh without ctypes' compiler runs, and finds liboqs as before."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

from gt_remote.tunnel.quick_import import might_be_installed, quick

PROBE = "import ctypes.util, sys; {imports}; import asyncssh.crypto.pq as pq; print(pq._oqs_lib)"


def run_with_recording_compiler(tmp_path: Path, imports: str) -> tuple[str, bool]:
    """Run an import in a fresh Python whose PATH starts with a gcc and an ld that record being
    run: what asyncssh's liboqs lookup found, and whether it started the compiler for it."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir(exist_ok=True)
    record = tmp_path / "compiler-ran"
    record.unlink(missing_ok=True)
    for tool in ("gcc", "cc", "ld"):
        (fake_bin / tool).write_text(f"#!/bin/sh\necho {tool} >> {record}\nexit 1\n")
        (fake_bin / tool).chmod(0o755)
    env = {**os.environ, "PATH": f"{fake_bin}:{os.environ['PATH']}"}
    result = subprocess.run([sys.executable, "-c", PROBE.format(imports=imports)], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip(), record.exists()


def test_the_supervisor_imports_asyncssh_without_running_the_compiler(tmp_path: Path) -> None:
    found_plain, compiler_plain = run_with_recording_compiler(tmp_path, "pass")
    found_quick, compiler_quick = run_with_recording_compiler(tmp_path, "import gt_remote.runtime.supervisor")
    assert found_quick == found_plain  # the same liboqs (or none) as asyncssh finds on its own
    if not might_be_installed("oqs") and not might_be_installed("liboqs"):
        assert compiler_plain, "the check is void: a plain import of asyncssh did not run the compiler here"
        assert not compiler_quick


def test_a_library_the_loader_cannot_see_is_not_installed(tmp_path: Path) -> None:
    cache = tmp_path / "ld.so.cache"
    cache.write_bytes(b"glibc-ld.so.cache1.1\0libc.so.6\0/lib/x86_64-linux-gnu/libc.so.6\0")
    assert not might_be_installed("gtremote-nothing", cache, {})
    lookups: list[str] = []
    real = lambda name: lookups.append(name) or "libc.so.6"  # noqa: E731
    assert quick(real)("oqs") is None or might_be_installed("oqs")
    assert quick(real)("c") == "libc.so.6" and lookups[-1] == "c"  # other names: ctypes' own search


def test_a_library_the_loader_can_see_goes_to_ctypes_search(tmp_path: Path) -> None:
    cache = tmp_path / "ld.so.cache"
    cache.write_bytes(b"glibc-ld.so.cache1.1\0libgtremote-cached.so.5\0/usr/lib/libgtremote-cached.so.5\0")
    assert might_be_installed("gtremote-cached", cache, {})
    libs = tmp_path / "libs"
    libs.mkdir()
    (libs / "libgtremote-path.so.1").write_bytes(b"")
    assert might_be_installed("gtremote-path", cache, {"LD_LIBRARY_PATH": f"/nonexistent:{libs}"})
    assert not might_be_installed("gtremote-path", cache, {})
    assert might_be_installed("gtremote-anything", tmp_path / "no-cache-here", {})  # no cache (musl): ctypes decides


def test_a_library_in_the_loader_s_multiarch_directory_goes_to_ctypes_search(tmp_path: Path) -> None:
    """Debian's loader searches /usr/lib/x86_64-linux-gnu by default, where a liboqs installed
    without ldconfig would be: libc is only there on this test bed, so it stands in for it."""
    multiarch = sysconfig.get_config_var("MULTIARCH")
    assert multiarch and any(name.startswith("libc.so") for name in os.listdir(f"/usr/lib/{multiarch}"))
    cache = tmp_path / "ld.so.cache"
    cache.write_bytes(b"glibc-ld.so.cache1.1\0")  # a cache that names nothing: only the directories can answer
    assert might_be_installed("c", cache, {})


NOTICES = """
import warnings
import gt_remote.tunnel.quick_import
for module, message in (("asyncssh.crypto.misc", "DSA is deprecated and support will be removed"), ("cryptography.utils", "X is deprecated"),
                        ("asyncssh.connection", "an unrelated note"), ("gt_remote.tunnel.link", "our own deprecation")):
    warnings.warn_explicit(message, UserWarning, module.replace(".", "/") + ".py", 1, module=module)
"""


def test_library_deprecation_notices_are_hidden_unless_verbose() -> None:
    """#30.3: the first import of asyncssh hides the libraries' deprecation notices (the real
    one, cryptography's DSA, is checked in tests/e2e/test_logs.py), and only those; -v (the
    verbosity the CLI passes on in the environment) shows them."""
    def shown(verbose: str) -> str:
        env = {**os.environ, "GT_REMOTE_VERBOSE": verbose}
        result = subprocess.run([sys.executable, "-c", NOTICES], env=env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        return result.stderr

    quiet = shown("0")
    assert "DSA is deprecated" not in quiet and "X is deprecated" not in quiet
    assert "an unrelated note" in quiet and "our own deprecation" in quiet
    verbose = shown("1")
    assert "DSA is deprecated" in verbose and "X is deprecated" in verbose
