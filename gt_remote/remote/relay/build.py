"""The relay as it is uploaded: one stdlib-only file, built from the shared protocol
modules and the relay's own code.

The remote runs the relay with its own python3 (3.8 or newer), which cannot import this
package. So each module of gt_remote/protocol/ that the relay imports (the stream core, and
the adapter both ends share) is put in place of its import, once, and the result is what is
uploaded, hashed and run. The build is a pure function of files the package ships: the same
bytes, the same hash, on every laptop with this version.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import gt_remote.protocol

PROTOCOL = Path(gt_remote.protocol.__file__).parent
RELAY = Path(__file__).with_name("relay_agent.py")
NAME = "relay_agent.py"  # the uploaded file's name (remote scripts match it in command lines)
IMPORT = "from gt_remote.protocol."  # how the relay (and the modules) import a shared module
FUTURE = "from __future__ import annotations\n"


class BuildError(RuntimeError):
    """The sources no longer have the shape the build expects."""


def protocol_modules() -> dict[str, str]:
    """The shared modules' texts by name (stream, pipe, ...)."""
    return {path.stem: path.read_text(encoding="utf-8") for path in sorted(PROTOCOL.glob("*.py")) if path.stem != "__init__"}


def inline(source: str, modules: dict[str, str], done: set[str] | None = None) -> str:
    """`source` with each import of a shared module replaced by that module's text, the first
    time it is imported, and dropped after (its names are there already)."""
    done = set() if done is None else done
    lines = source.splitlines(keepends=True)
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith(("import gt_remote", "from gt_remote")) and not line.startswith(IMPORT):
            raise BuildError(f"{line.strip()!r}: the remote has only the stdlib and the shared protocol modules")
        if not line.startswith(IMPORT):
            out.append(line)
            i += 1
            continue
        end = i
        if line.rstrip().endswith("("):
            while not lines[end].startswith(")"):
                end += 1
                if end == len(lines):
                    raise BuildError(f"{line.strip()!r} is never closed")
        name = line[len(IMPORT) :].split()[0]
        if name not in modules:
            raise BuildError(f"{line.strip()!r}: no gt_remote/protocol/{name}.py")
        if name not in done:
            done.add(name)
            text = modules[name]
            if text.count(FUTURE) != 1:
                raise BuildError(f"gt_remote/protocol/{name}.py must have exactly one {FUTURE.strip()!r}")
            out.append(f"# --- gt_remote/protocol/{name}.py ---\n")
            out.append(inline(text.replace(FUTURE, ""), modules, done))
            out.append(f"# --- end of gt_remote/protocol/{name}.py ---\n")
        i = end + 1
    return "".join(out)


@functools.cache
def agent() -> bytes:
    """The uploaded relay's bytes."""
    relay = RELAY.read_text(encoding="utf-8")
    if IMPORT + "stream import" not in relay:
        raise BuildError(f"{RELAY.name} does not import the stream core ({IMPORT}stream)")
    return inline(relay, protocol_modules()).encode("utf-8")


def digest() -> str:
    """The first 16 hex digits of its SHA-256: the name of its directory on the remote."""
    return hashlib.sha256(agent()).hexdigest()[:16]


def write(directory: Path) -> Path:
    """The built relay as a file in `directory` (private), for a test or a look at it."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / NAME
    path.write_bytes(agent())
    path.chmod(0o600)
    return path
