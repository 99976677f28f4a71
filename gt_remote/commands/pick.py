"""`gt-remote pick`: the host a polecat should go to now, from the figures each host's
supervisor already keeps (no SSH connection, nothing measured here), and where a named
polecat already lives.

Candidates are the hosts named, else the config's hosts with `pool = true`, else every host
gt-remote has a supervisor for. Their eligibility and score are gt_remote/base/pool.py's;
the placements and reservations, read and written under one lock, gt_remote/base/placements.py's.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from gt_remote.base.errors import GtRemoteError, NotUp, UsageError, shell_word
from gt_remote.base.paths import known_host_names
from gt_remote.base.placements import Book, check_name
from gt_remote.base.pool import Candidate, NoHostToPick, PoolSettings, Reservation, assess, choose, not_up_reason, pending, pool_settings
from gt_remote.host.lifecycle import host_status

FIGURES_WAIT_S = 2.0  # a host that has just come up measures its first figures within moments


def when(timestamp: float) -> str:
    """A time as `status` writes them (ISO 8601, UTC), without loading datetime."""
    return time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(timestamp))


class Choice:
    """What a pick found: the host (or none, and why), every candidate, and the placement.
    (A plain class: a dataclass costs `pick`'s start-up a millisecond to define.)"""

    def __init__(self, candidates: list[Candidate] | None = None, picked: Candidate | None = None, status: dict[str, Any] | None = None,
                 name: str | None = None, sticky: bool = False, placed_at: str | None = None, source: str = "") -> None:  # fmt: skip
        self.candidates = candidates or []
        self.picked = picked
        self.status = status  # the picked host's live status: its export lines
        self.name = name
        self.sticky = sticky  # the host NAME was placed on before, kept
        self.placed_at = placed_at
        self.moved_from: str | None = None
        self.source = source  # how the candidates were found: named, pool, or up
        self.refusal: GtRemoteError | None = None

    def to_dict(self) -> dict[str, Any]:
        picked = self.picked
        return {
            "picked": picked.host if picked else None,
            "for": self.name,
            "sticky": self.sticky,
            "placed_at": self.placed_at,
            "moved_from": self.moved_from,
            "candidates_from": self.source,
            "why": picked.why if picked else str(self.refusal or ""),
            "exports": list((self.status or {}).get("exports") or []),
            "candidates": [candidate.to_dict() for candidate in self.candidates],
        }


def candidate_names(named: list[str], config: Mapping[str, Mapping[str, Any]]) -> tuple[list[str], str]:
    """The hosts to choose from and where they came from: those named, else the pool (`pool =
    true` in the config), else every host gt-remote has a record of (only those up can win)."""
    if named:
        return list(dict.fromkeys(named)), "named"
    pool = sorted(name for name, table in config.items() if table.get("pool") is True)
    if pool:
        return pool, "pool"
    return known_host_names(), "up"


def read_statuses(names: list[str]) -> dict[str, dict[str, Any] | None]:
    """Each host's status as `status --json` shows it (a `down` row when no supervisor answers).
    A host that has just come up is asked again for up to FIGURES_WAIT_S until its first
    figures are there."""
    found: dict[str, dict[str, Any] | None] = {name: host_status(name) for name in names}
    deadline = time.monotonic() + FIGURES_WAIT_S
    while time.monotonic() < deadline:
        waiting = [name for name, status in found.items() if _figures_coming(status)]
        if not waiting:
            break
        time.sleep(0.05)
        for name in waiting:
            found[name] = host_status(name)
    return found


def _figures_coming(status: dict[str, Any] | None) -> bool:
    """Up, without figures yet, and only just up: its first health check is under way."""
    if not status or status.get("state") != "up" or status.get("load") is not None:
        return False
    uptime = status.get("uptime_s")
    settings = status.get("settings") or {}
    keepalive = settings.get("keepalive") if isinstance(settings, dict) else None
    keepalive = keepalive if isinstance(keepalive, (int, float)) and not isinstance(keepalive, bool) else 5.0
    return isinstance(uptime, (int, float)) and uptime <= 2 * keepalive + 1


def settings_of(names: list[str], config: Mapping[str, Mapping[str, Any]]) -> dict[str, PoolSettings]:
    return {name: pool_settings(name, dict(config.get(name, {}))) for name in names}


def _measured_at(status: dict[str, Any] | None, now: float) -> tuple[int | None, float | None]:
    """A host's session count and when it was read (the laptop's clock), from its status."""
    load = (status or {}).get("load")
    if not isinstance(load, dict):
        return None, None
    sessions, age = load.get("sessions"), load.get("age_s")
    if not isinstance(sessions, int) or isinstance(age, bool) or not isinstance(age, (int, float)):
        return None, None
    return sessions, now - float(age)


def held_reservations(book: Book, statuses: Mapping[str, dict[str, Any] | None], now: float) -> dict[str, int]:
    """Drop the reservations that expired or that a host's figures now show; the count still held per host."""
    by_host: dict[str, list[Reservation]] = {}
    for reservation in book.reservations:
        by_host.setdefault(reservation.host, []).append(reservation)
    kept: list[Reservation] = []
    for host, reservations in by_host.items():
        sessions, measured_at = _measured_at(statuses.get(host), now)
        kept += pending(reservations, sessions, measured_at, now)
    book.reservations = sorted(kept, key=lambda r: r.at)
    counts: dict[str, int] = {}
    for reservation in kept:
        counts[reservation.host] = counts.get(reservation.host, 0) + 1
    return counts


def survey(named: list[str], config: Mapping[str, Mapping[str, Any]]) -> Choice:
    """Every candidate and the one a pick would choose now, without reserving anything: the
    pool view (`status --pool`)."""
    names, source = candidate_names(named, config)
    settings = settings_of(names, config)
    statuses = read_statuses(names)
    with Book() as book:
        reserved = held_reservations(book, statuses, time.time())
    candidates = [assess(name, statuses[name], settings[name], reserved.get(name, 0)) for name in names]
    winner = choose(candidates)
    return Choice(candidates, winner, statuses.get(winner.host) if winner else None, source=source)


def pick(named: list[str], config: Mapping[str, Mapping[str, Any]], name: str | None = None, move: bool = False) -> Choice:
    """The best host now (reserved for a few seconds), or NAME's host while it is up; with
    `move`, NAME placed anew on another host. `refusal` says why there is none."""
    if name is not None:
        check_name(name)
    names, source = candidate_names(named, config)
    settings = settings_of(names, config)
    statuses = read_statuses(names)
    with Book() as book:
        now = time.time()
        reserved = held_reservations(book, statuses, now)
        record = book.placements.get(name) if name is not None else None
        old = str(record["host"]) if record else None
        choice = Choice(source=source, name=name)
        if record is not None and old is not None and not move:
            choice = _sticky(book, name or "", record, old, named, statuses, settings, reserved, now)
            choice.source = source
            book.save()
            return choice
        if move and old is not None and old in names:
            names = [host for host in names if host != old]  # moving never lands where it left
        candidates = [assess(host, statuses[host], settings[host], reserved.get(host, 0)) for host in names]
        winner = choose(candidates)
        choice.candidates, choice.picked = candidates, winner
        if winner is None:
            choice.refusal = _nothing_to_pick(candidates, source, old if move else None)
            book.save()
            return choice
        choice.status = statuses[winner.host]
        book.reservations.append(Reservation(winner.host, now, winner.sessions or 0, name))
        if name is not None:
            book.placements[name] = {"host": winner.host, "at": when(now), "down_seen": None}
            choice.placed_at = when(now)
            choice.moved_from = old if move and old != winner.host else None
        book.save()
        return choice


def _sticky(
    book: Book,
    name: str,
    record: dict[str, Any],
    host: str,
    named: list[str],
    statuses: Mapping[str, dict[str, Any] | None],
    settings: Mapping[str, PoolSettings],
    reserved: Mapping[str, int],
    now: float,
) -> Choice:
    """NAME was placed on `host`: the same host while it is up, whatever its load (its worktree
    and panes are there); a refusal naming it, and since when, while it is not."""
    choice = Choice(name=name, sticky=True, placed_at=str(record.get("at") or ""))
    if named and host not in named:
        choice.refusal = UsageError(
            f"{name} is placed on {host}, which is not among the hosts named ({', '.join(named)})",
            f"name {host} too, or place it anew among them with --move (its panes on {host} stay there)",
        )
        return choice
    status = statuses[host] if host in statuses else host_status(host)
    candidate = assess(host, status, settings.get(host, PoolSettings()), reserved.get(host, 0))
    choice.candidates = [candidate]
    if status is not None and status.get("state") == "up":
        record["down_seen"] = None
        candidate.why = f"{name} was placed here at {record.get('at') or '?'}: its worktree and panes are here"
        choice.picked, choice.status = candidate, status
        return choice
    if not isinstance(record.get("down_seen"), (int, float)):
        record["down_seen"] = now
    since = status.get("since") if status and status.get("state") in ("reconnecting", "failed") and status.get("since") else None
    since_text = f"since {since}" if since else f"since at least {when(float(record['down_seen']))}, when a pick first found it down"
    candidate.why = not_up_reason(status)
    choice.refusal = NotUp(
        f"{name} is placed on {host}, which is not up ({candidate.why}); {since_text}",
        f"its panes are there: wait for {host} to come back ('gt-remote status {shell_word(host)}'), "
        f"or place it anew with 'gt-remote pick --for {shell_word(name)} --move' (its panes on {host} stay there)",
    )
    book.placements[name] = record
    return choice


def _nothing_to_pick(candidates: list[Candidate], source: str, moving_from: str | None) -> NoHostToPick:
    left = f" (other than {moving_from}, which it moves from)" if moving_from else ""
    if not candidates:
        where = {"pool": "no host has pool = true", "named": "no host was named", "up": "gt-remote has brought no host up"}[source]
        return NoHostToPick(f"no host to pick from{left}: {where}", "bring one up with: eval \"$(gt-remote up HOST)\"")
    return NoHostToPick(
        f"none of the {len(candidates)} candidate host(s){left} can take work now (each one's reason is above)",
        "bring one up, wait for one to come back, or raise its max_sessions in the config",
    )


def forget(name: str) -> str | None:
    """Clear NAME's placement; the host it was on, or None if there was none."""
    check_name(name)
    with Book() as book:
        record = book.placements.pop(name, None)
        book.save()
    return str(record["host"]) if record else None
