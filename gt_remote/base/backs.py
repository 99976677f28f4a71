"""Back tunnels' specs: which port on the gaming PC reaches which port on the laptop.

The grammar follows ssh's `-R`, plus named presets for the town's services:
  PORT                                the gaming PC's 127.0.0.1:PORT reaches the laptop's 127.0.0.1:PORT
  REMOTE_PORT:LOCAL_HOST:LOCAL_PORT   LOCAL_HOST is loopback (127.0.0.1, localhost or ::1)
  NAME                                a preset: dolt (3307), gt-proxy (9876)
  NAME:REMOTE_PORT                    a preset on another port of the gaming PC (its own 3307 taken)
  NAME:REMOTE_PORT:LOCAL_HOST:LOCAL_PORT

A preset also names the variables the gaming PC's server is started with, so the panes'
`gt` and `bd` find the service without a variable set by hand (gastown reads GT_DOLT_HOST and
GT_DOLT_PORT, and hands bd BEADS_DOLT_SERVER_HOST and BEADS_DOLT_PORT; its proxy client reads
GT_PROXY_URL). A spec is kept as its canonical text (`canonical`), which HostSettings holds.
"""

from __future__ import annotations

from dataclasses import dataclass

from gt_remote.base.errors import UsageError

LOOPBACK_NAMES = {"127.0.0.1": "127.0.0.1", "localhost": "127.0.0.1", "::1": "::1", "[::1]": "::1"}


@dataclass(frozen=True)
class Preset:
    port: int
    protocol: str | None  # what `doctor` checks the laptop's service speaks ("mysql": its greeting)
    what: str


PRESETS = {
    "dolt": Preset(3307, "mysql", "the town's Dolt SQL server (beads)"),
    "gt-proxy": Preset(9876, None, "gastown's gt-proxy-server"),
}
SPEC_FIX = "write PORT, REMOTE_PORT:127.0.0.1:LOCAL_PORT, or a preset: dolt, gt-proxy, dolt:13307"


@dataclass(frozen=True)
class BackSpec:
    remote_port: int  # on the gaming PC, 127.0.0.1
    local_host: str  # on the laptop: loopback only
    local_port: int
    preset: str | None = None

    @property
    def canonical(self) -> str:
        """The spec as HostSettings keeps it, and as `status` shows it."""
        tail = f"{self.remote_port}:{self.local_host}:{self.local_port}"
        if self.preset is None:
            return str(self.remote_port) if self.local_host == "127.0.0.1" and self.local_port == self.remote_port else tail
        default = PRESETS[self.preset].port
        if self.local_host == "127.0.0.1" and self.local_port == default:
            return self.preset if self.remote_port == default else f"{self.preset}:{self.remote_port}"
        return f"{self.preset}:{tail}"

    @property
    def protocol(self) -> str | None:
        return PRESETS[self.preset].protocol if self.preset else None

    @property
    def local_text(self) -> str:
        host = f"[{self.local_host}]" if ":" in self.local_host else self.local_host
        return f"{host}:{self.local_port}"

    def environment(self) -> dict[str, str]:
        """What the gaming PC's server (and so every pane) is started with for this tunnel."""
        port = str(self.remote_port)
        if self.preset == "dolt":
            return {"GT_DOLT_HOST": "127.0.0.1", "GT_DOLT_PORT": port, "BEADS_DOLT_SERVER_HOST": "127.0.0.1", "BEADS_DOLT_PORT": port}
        if self.preset == "gt-proxy":
            return {"GT_PROXY_URL": f"https://127.0.0.1:{port}"}
        return {}


def parse_back(text: object) -> BackSpec:
    """One spec, or UsageError naming what is wrong and the forms that work."""
    if not isinstance(text, str) or not text.strip():
        raise UsageError(f"back tunnel {text!r} is not a spec", SPEC_FIX)
    parts = text.strip().split(":")
    preset = None
    if parts[0] in PRESETS:
        preset, parts = parts[0], parts[1:]
        default = PRESETS[preset].port
        if not parts:
            return BackSpec(default, "127.0.0.1", default, preset)
        if len(parts) == 1:
            return BackSpec(_port(parts[0], text), "127.0.0.1", default, preset)
    elif not (parts[0].isascii() and parts[0].isdigit()):
        raise UsageError(f"back tunnel {text!r}: {parts[0]!r} is neither a port nor a preset ({', '.join(PRESETS)})", SPEC_FIX)
    if len(parts) == 1:
        port = _port(parts[0], text)
        return BackSpec(port, "127.0.0.1", port, preset)
    if len(parts) >= 3:  # REMOTE:HOST:LOCAL, where HOST may be ::1 (so split from both ends)
        host = ":".join(parts[1:-1])
        local_host = LOOPBACK_NAMES.get(host)
        if local_host is None:
            raise UsageError(
                f"back tunnel {text!r} reaches {host}, which is not this laptop's loopback",
                "a back tunnel reaches services on this laptop only: use 127.0.0.1 (or localhost)",
            )
        return BackSpec(_port(parts[0], text), local_host, _port(parts[-1], text), preset)
    raise UsageError(f"back tunnel {text!r} is not a spec", SPEC_FIX)


def _port(value: str, text: str) -> int:
    if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= 65535:
        raise UsageError(f"back tunnel {text!r}: {value!r} is not a port number", SPEC_FIX)
    return int(value)


def parse_backs(values: object) -> tuple[str, ...]:
    """The specs of a host, canonical, checked together: two on one gaming-PC port conflict."""
    if isinstance(values, str) or not isinstance(values, (list, tuple)):
        raise UsageError(f"back must be a list of specs, not {values!r}", 'write back = ["dolt"] under [hosts.NAME]')
    specs = [parse_back(value) for value in values]
    seen: dict[int, BackSpec] = {}
    for spec in specs:
        if spec.remote_port in seen and seen[spec.remote_port] != spec:
            raise UsageError(
                f"back tunnels {seen[spec.remote_port].canonical} and {spec.canonical} both want port {spec.remote_port} on the gaming PC",
                "give one of them another port, e.g. dolt:13307",
            )
        seen[spec.remote_port] = spec
    return tuple(dict.fromkeys(spec.canonical for spec in specs))


def environment(backs: tuple[str, ...]) -> dict[str, str]:
    """Every variable the host's back tunnels give the gaming PC's server."""
    merged: dict[str, str] = {}
    for text in backs:
        merged.update(parse_back(text).environment())
    return merged
