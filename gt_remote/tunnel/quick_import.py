"""Import asyncssh without the compiler runs of its liboqs lookup.

When imported, asyncssh looks for liboqs (post-quantum key exchange) with
`ctypes.util.find_library("oqs")`, then `("liboqs")`. On Linux, a name that is not installed
makes that function run `ldconfig -p`, then `gcc` (which runs `ld`), then `ld` again, for
each name: 20 to 90 ms of every supervisor start, most of it for a library few machines have.

Importing this module first imports asyncssh with a find_library that answers "not found"
at once when the dynamic loader could not load the library anyway: no file named
lib<name>.so* in /etc/ld.so.cache, in LD_LIBRARY_PATH or in the loader's default directories.
If such a file exists anywhere there, ctypes' own search runs, unchanged; other names and
other systems always get ctypes' own search. The patch is undone when asyncssh is in.

The same first import hides the deprecation notices asyncssh's import writes (cryptography's
"DSA is deprecated", ten lines at the top of every supervisor log), unless -v asks for them:
gt_remote.base.progress.hush_library_warnings.
"""

from __future__ import annotations

import ctypes.util
import os
import sys
import sysconfig
from collections.abc import Callable
from pathlib import Path

from gt_remote.base.progress import hush_library_warnings

SKIPPABLE = frozenset({"oqs", "liboqs"})  # the names asyncssh asks for
LOADER_CACHE = Path("/etc/ld.so.cache")
_MULTIARCH = sysconfig.get_config_var("MULTIARCH") or ""  # Debian's x86_64-linux-gnu: its loader searches these too
DEFAULT_DIRS = ("/lib", "/usr/lib", "/lib64", "/usr/lib64", "/usr/local/lib", *((f"/lib/{_MULTIARCH}", f"/usr/lib/{_MULTIARCH}") if _MULTIARCH else ()))

FindLibrary = Callable[[str], "str | None"]


def might_be_installed(name: str, cache: Path = LOADER_CACHE, environ: dict[str, str] | None = None) -> bool:
    """Could the dynamic loader find lib<name>.so? False only when it surely could not: the
    loader's cache exists and does not name it, and no directory it searches holds it."""
    soname = f"lib{name}.so".encode()
    try:
        if soname in cache.read_bytes():
            return True
    except OSError:
        return True  # no cache to read (musl, an odd system): let ctypes decide
    paths = (environ if environ is not None else os.environ).get("LD_LIBRARY_PATH", "")
    for directory in [*paths.split(":"), *DEFAULT_DIRS]:
        try:
            if directory and any(entry.startswith(soname.decode()) for entry in os.listdir(directory)):
                return True
        except OSError:
            continue
    return False


def quick(real: FindLibrary) -> FindLibrary:
    """`real` (ctypes.util.find_library), answering None at once for a skippable name the
    loader could not find anyway."""

    def find_library(name: str) -> str | None:
        if sys.platform.startswith("linux") and name in SKIPPABLE and not might_be_installed(name):
            return None
        return real(name)

    return find_library


def import_asyncssh() -> None:
    if "asyncssh" in sys.modules:
        return
    hush_library_warnings()
    real = ctypes.util.find_library
    setattr(ctypes.util, "find_library", quick(real))  # noqa: B010  (mypy: a module's function is not assignable)
    try:
        import asyncssh  # noqa: F401  (the import is the point)
    finally:
        setattr(ctypes.util, "find_library", real)  # noqa: B010


import_asyncssh()
