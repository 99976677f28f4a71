"""The relay as it is uploaded: one stdlib-only file, built from the stream core and the
relay's own code.

The remote runs the relay with its own python3 (3.8 or newer), which cannot import this
package. So the core (gt_remote/protocol/stream.py) is put in place of the relay's one
import of it (bootstrap/relay_agent.py), and the result is what is uploaded, hashed and
run. The build is a pure function of the two files the package ships: the same bytes, the
same hash, on every laptop with this version.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

from gt_remote.protocol import stream

CORE = Path(stream.__file__)
RELAY = Path(__file__).with_name("relay_agent.py")
NAME = "relay_agent.py"  # the uploaded file's name (remote scripts match it in command lines)
IMPORT = "from gt_remote.protocol.stream import"  # the relay's one import of the core
FUTURE = "from __future__ import annotations\n"


class BuildError(RuntimeError):
    """The relay's source no longer has the shape the build expects."""


def inline(relay: str, core: str) -> str:
    """`relay` with its import of the core replaced by the core's text."""
    lines = relay.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.startswith(IMPORT)), None)
    if start is None:
        raise BuildError(f"{RELAY.name} has no line starting with {IMPORT!r}")
    end = start
    if lines[start].rstrip().endswith("("):
        while not lines[end].startswith(")"):
            end += 1
            if end == len(lines):
                raise BuildError(f"{RELAY.name}: the import of the core is never closed")
    if core.count(FUTURE) != 1:
        raise BuildError(f"{CORE.name} must have exactly one {FUTURE.strip()!r}")
    body = core.replace(FUTURE, "")
    banner = f"# --- the stream core, from gt_remote/protocol/{CORE.name} ---\n"
    return "".join(lines[:start]) + banner + body + "# --- end of the stream core ---\n" + "".join(lines[end + 1 :])


@functools.cache
def agent() -> bytes:
    """The uploaded relay's bytes."""
    return inline(RELAY.read_text(encoding="utf-8"), CORE.read_text(encoding="utf-8")).encode("utf-8")


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
