"""A pool of hosts: which may take a polecat now, and which should. Pure: no IO.

Each candidate's figures are what its supervisor measured at its last health check (the
`load` object of `status`). A host is eligible when it is up, its last health Ping went
through, its figures are fresh, and its sessions (with the picks reserved on it) are under
its `max_sessions`. Among the eligible, the lowest score wins:

    score = (sessions + reserved + 4 × cpu_load + 4 × memory_in_use) / weight

in sessions' worth: every session counts 1, a host whose CPUs are all busy (`cpu_load` 1,
the load average as high as its CPU count) counts 4 more, and one whose memory is all in use
(MemAvailable 0) 4 more. `weight` (default 1) is how much work a host takes beside the
others: weight 2 takes twice the sessions at the same load. Ties go to the shorter round
trip, then to the name.

A pick holds a reservation on its host (gt_remote/base/placements.py keeps them) until a
reading taken after it shows one more session there, or RESERVATION_TTL_S passes: picks
started together count each other, and spread over the hosts by their room.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from gt_remote.base.errors import ConfigError, GtRemoteError

CPU_SESSIONS = 4.0  # a host with every CPU busy counts as this many sessions more
MEMORY_SESSIONS = 4.0  # a host with all its memory in use counts as this many sessions more
RESERVATION_TTL_S = 10.0  # a pick's reservation lasts until its session shows, or this long
STALE_KEEPALIVES = 3  # figures older than this many keepalives (and STALE_FLOOR_S) are not used
STALE_FLOOR_S = 15.0
POOL_KEYS = ("pool", "max_sessions", "weight")
MAX_WEIGHT = 1000.0


class NoHostToPick(GtRemoteError):
    """No candidate can take work now: each one's reason was said."""


class PoolSettings(NamedTuple):
    """A host's `pool`, `max_sessions` and `weight` in the config. (No dataclasses here: `pick`
    and `env` share their start-up budget, and each dataclass costs a millisecond to define.)"""

    pool: bool = False
    max_sessions: int | None = None
    weight: float = 1.0


def pool_settings(name: str, table: dict[str, Any]) -> PoolSettings:
    """The pool keys of `[hosts.NAME]`, checked: a wrong type names the key and the fix."""
    pool = table.get("pool", False)
    if not isinstance(pool, bool):
        raise ConfigError(f"[hosts.{name}] pool must be true or false, not {pool!r}", "write pool = true to make the host one pick chooses from")
    cap = table.get("max_sessions")
    if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
        raise ConfigError(f"[hosts.{name}] max_sessions must be a whole number of sessions, at least 1, not {cap!r}", "write e.g. max_sessions = 8, or leave it out for no cap")
    weight = table.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or not 0 < weight <= MAX_WEIGHT:
        raise ConfigError(f"[hosts.{name}] weight must be a number above 0 and at most {MAX_WEIGHT:g}, not {weight!r}", "write e.g. weight = 2 for a host that takes twice the work")
    return PoolSettings(pool, cap, float(weight))


def score(sessions: int, reserved: int, cpu_load: float, mem_used: float, weight: float) -> float:
    """The formula above: lower is better."""
    return (sessions + reserved + CPU_SESSIONS * cpu_load + MEMORY_SESSIONS * mem_used) / weight


def memory_in_use(load: dict[str, Any]) -> float | None:
    total, available = load.get("mem_total_mb"), load.get("mem_available_mb")
    if not isinstance(total, int) or not isinstance(available, int) or total <= 0:
        return None
    return min(1.0, max(0.0, 1 - available / total))


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


class Candidate:
    """One host as a pick sees it: its figures, whether it may take work, and why."""

    def __init__(self, host: str, settings: PoolSettings, state: str, reserved: int = 0, since: str | None = None) -> None:
        self.host = host
        self.settings = settings
        self.state = state
        self.reserved = reserved
        self.since = since  # when it entered its state (for a host that is not up)
        self.load: dict[str, Any] | None = None
        self.rtt_ms: float | None = None
        self.why_not: str | None = None  # set: not eligible, and why
        self.score: float | None = None
        self.why = ""  # why it won, or why it lost (choose fills it in)

    def __repr__(self) -> str:
        return f"Candidate({self.host!r}, {self.state!r}, score={self.score}, why_not={self.why_not!r})"

    @property
    def eligible(self) -> bool:
        return self.why_not is None

    @property
    def sessions(self) -> int | None:
        value = (self.load or {}).get("sessions")
        return value if isinstance(value, int) else None

    def breakdown(self) -> str:
        """The score's terms, in words."""
        load = self.load or {}
        cpu = load.get("cpu_load")
        used = memory_in_use(load)
        cpu_text = f"CPU load {cpu:.2f}" if isinstance(cpu, (int, float)) else "CPU load not measured yet (0)"
        used_text = f"memory in use {used:.2f}" if used is not None else "memory not measured (0)"
        return f"({_plural(self.sessions or 0, 'session')} + {self.reserved} reserved + 4 × {cpu_text} + 4 × {used_text}) / weight {self.settings.weight:g}"

    def to_dict(self) -> dict[str, Any]:
        load = self.load or {}
        return {
            "host": self.host,
            "eligible": self.eligible,
            "score": None if self.score is None else round(self.score, 3),
            "why": self.why,
            "state": self.state,
            "pool": self.settings.pool,
            "max_sessions": self.settings.max_sessions,
            "weight": self.settings.weight,
            "sessions": self.sessions,
            "reserved": self.reserved,
            "cpu_load": load.get("cpu_load"),
            "cpu_from": load.get("cpu_from"),
            "cpus": load.get("cpus"),
            "mem_available_mb": load.get("mem_available_mb"),
            "mem_total_mb": load.get("mem_total_mb"),
            "rtt_ms": self.rtt_ms,
            "figures_age_s": load.get("age_s"),
        }


def stale_after(status: dict[str, Any]) -> float:
    settings = status.get("settings") or {}
    keepalive = settings.get("keepalive") if isinstance(settings, dict) else None
    keepalive = float(keepalive) if isinstance(keepalive, (int, float)) and not isinstance(keepalive, bool) and keepalive > 0 else 5.0
    return max(STALE_FLOOR_S, STALE_KEEPALIVES * keepalive)


def not_up_reason(status: dict[str, Any] | None) -> str:
    """Why a host that is not up cannot take work, in a few words."""
    if status is None:
        return "down: gt-remote has never brought it up"
    state = status.get("state")
    error = status.get("last_error")
    if state == "connecting":
        return f"still coming up ({status.get('step') or 'connecting'})"
    if state in ("reconnecting", "failed"):
        since = f" since {status['since']}" if status.get("since") else ""
        return f"{state}{since}" + (f": {error}" if error else "")
    return f"down: {error or 'no supervisor runs for it (stopped with down, or never brought up)'}"


def assess(host: str, status: dict[str, Any] | None, settings: PoolSettings, reserved: int = 0) -> Candidate:
    """A candidate from its live status (None: gt-remote knows nothing of it); `reserved` is the
    picks still pending on it."""
    state = str(status.get("state")) if status else "down"
    found = Candidate(host, settings, state, reserved=reserved, since=status.get("since") if status else None)
    if status is None or state != "up":
        found.why_not = not_up_reason(status)
        return found
    load = status.get("load")
    found.load = load if isinstance(load, dict) else None
    rtt = status.get("rtt_ms")
    found.rtt_ms = rtt if isinstance(rtt, (int, float)) and not isinstance(rtt, bool) else None
    if status.get("port_refused"):
        found.why_not = "another account holds its remote port: nothing is forwarded"
    elif found.rtt_ms is None:
        found.why_not = "not healthy: its last health Ping failed" + (f" ({status['last_error']})" if status.get("last_error") else "")
    elif found.load is None:
        found.why_not = "no load figures yet: its supervisor measures them at each health check"
    elif isinstance(found.load.get("age_s"), (int, float)) and found.load["age_s"] > stale_after(status):
        found.why_not = f"its load figures are {found.load['age_s']:.0f} s old: its health checks have stopped"
    elif found.sessions is None:
        found.why_not = "its server did not report a session count (GetServerStatus)"
    elif settings.max_sessions is not None and found.sessions + reserved >= settings.max_sessions:
        found.why_not = f"at its cap: {_plural(found.sessions, 'session')}" + (f" + {reserved} reserved" if reserved else "") + f" of max_sessions {settings.max_sessions}"
    if found.why_not is None:
        figures = found.load or {}
        cpu = figures.get("cpu_load")
        used = memory_in_use(figures)
        found.score = score(found.sessions or 0, reserved, float(cpu) if isinstance(cpu, (int, float)) else 0.0, used or 0.0, settings.weight)
    return found


def choose(candidates: list[Candidate]) -> Candidate | None:
    """The lowest score among the eligible (None if none is); every candidate's `why` says why
    it won or lost."""
    eligible = sorted((c for c in candidates if c.eligible), key=lambda c: (c.score or 0.0, c.rtt_ms if c.rtt_ms is not None else math.inf, c.host))
    winner = eligible[0] if eligible else None
    for candidate in candidates:
        if not candidate.eligible:
            candidate.why = str(candidate.why_not)
        elif candidate is winner:
            others = len(eligible) - 1
            lead = "the lowest score" if others else "the only eligible host"
            candidate.why = f"{lead}: {candidate.score:.2f} = {candidate.breakdown()}"
        else:
            assert winner is not None and winner.score is not None and candidate.score is not None
            relation = "above" if candidate.score > winner.score else "equal to, and later in the tie-break than,"
            candidate.why = f"score {candidate.score:.2f} = {candidate.breakdown()}, {relation} {winner.host}'s {winner.score:.2f}"
    return winner


# --- reservations --------------------------------------------------------------------------


class Reservation(NamedTuple):
    """A pick on `host` at `at` (the laptop's clock), when its figures showed `baseline` sessions."""

    host: str
    at: float
    baseline: int
    name: str | None = None  # the --for NAME, if any

    def to_dict(self) -> dict[str, Any]:
        return {"host": self.host, "at": self.at, "baseline": self.baseline, "for": self.name}

    @classmethod
    def from_dict(cls, data: object) -> Reservation | None:
        if not isinstance(data, dict):
            return None
        host, at, baseline, name = data.get("host"), data.get("at"), data.get("baseline"), data.get("for")
        if not isinstance(host, str) or isinstance(at, bool) or not isinstance(at, (int, float)) or not math.isfinite(at):
            return None
        if isinstance(baseline, bool) or not isinstance(baseline, int) or baseline < 0:
            return None
        return cls(host, float(at), baseline, name if isinstance(name, str) else None)


def pending(reservations: list[Reservation], sessions: int | None, measured_at: float | None, now: float, ttl: float = RESERVATION_TTL_S) -> list[Reservation]:
    """One host's reservations still held: younger than `ttl`, and not yet shown by a reading
    (`sessions` at `measured_at`) taken after them. The oldest show first: a reading shows a
    reservation when it counts more new sessions since that pick's baseline than the older
    reservations it has already shown."""
    live = sorted((r for r in reservations if 0 <= now - r.at < ttl), key=lambda r: r.at)
    if sessions is None or measured_at is None:
        return live
    shown, held = 0, []
    for reservation in live:
        if measured_at > reservation.at and sessions - reservation.baseline > shown:
            shown += 1
        else:
            held.append(reservation)
    return held
