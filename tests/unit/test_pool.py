"""Placing work on a pool (gt_remote/base/pool.py), as pure logic: the score and its terms,
which hosts are eligible and why not, the winner and every loser's reason, the config keys,
and the reservations that keep picks started together from landing on one host."""

from __future__ import annotations

from typing import Any

import pytest

from gt_remote.base.errors import ConfigError
from gt_remote.base.pool import (
    CPU_SESSIONS,
    MEMORY_SESSIONS,
    RESERVATION_TTL_S,
    PoolSettings,
    Reservation,
    assess,
    choose,
    pending,
    pool_settings,
    score,
)


def status(sessions: int | None = 0, cpu: float | None = 0.0, available: int = 16384, total: int = 16384, **over: Any) -> dict[str, Any]:
    """A live `status --json` row of a host that is up, with its load figures."""
    load = {"sessions": sessions, "cpu_load": cpu, "cpu_from": "loadavg", "load_average": cpu, "cpus": 1, "mem_available_mb": available,
            "mem_total_mb": total, "read_by": "relay", "rtt_ms": 1.0, "at": "2026-01-01T00:00:00+00:00", "age_s": 0.5}
    row: dict[str, Any] = {"host": "x", "state": "up", "rtt_ms": 1.0, "port_refused": None, "last_error": None, "since": None, "settings": {"keepalive": 5.0}, "load": load}
    row.update(over)
    return row


def test_the_score_is_sessions_worth_over_the_weight() -> None:
    assert score(2, 1, 0.0, 0.0, 1.0) == 3.0
    assert score(0, 0, 1.0, 0.0, 1.0) == CPU_SESSIONS == 4.0  # every CPU busy: four sessions' worth
    assert score(0, 0, 0.0, 1.0, 1.0) == MEMORY_SESSIONS == 4.0  # no memory left: four more
    assert score(4, 0, 0.5, 0.5, 2.0) == (4 + 2 + 2) / 2  # weight 2 takes twice the work at the same score


def test_the_least_loaded_host_wins_and_every_other_says_why_it_lost() -> None:
    busy = assess("busy", status(sessions=3), PoolSettings())
    light = assess("light", status(sessions=1), PoolSettings())
    hot = assess("hot", status(sessions=0, cpu=0.9), PoolSettings())
    assert choose([busy, light, hot]) is light
    assert light.why.startswith("the lowest score: 1.")
    assert "1 session + 0 reserved" in light.why
    assert busy.why.startswith("score 3.") and "above light's 1." in busy.why
    assert "CPU load 0.90" in hot.why and "above light's" in hot.why


def test_a_heavier_weight_takes_more_sessions_at_the_same_load() -> None:
    big, small = assess("big", status(sessions=3), PoolSettings(weight=2.0)), assess("small", status(sessions=2), PoolSettings())
    assert choose([big, small]) is big  # 3 / 2 = 1.5 against 2


def test_ties_go_to_the_shorter_round_trip_then_the_name() -> None:
    far, near = assess("a-far", status(rtt_ms=9.0), PoolSettings()), assess("b-near", status(rtt_ms=1.0), PoolSettings())
    assert choose([far, near]) is near
    first, second = assess("a", status(), PoolSettings()), assess("b", status(), PoolSettings())
    assert choose([second, first]) is first
    assert "equal to, and later in the tie-break than, a's" in second.why


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        (None, "down: gt-remote has never brought it up"),
        ({"state": "down", "last_error": "the supervisor (pid 4) is not running: it died"}, "down: the supervisor (pid 4) is not running: it died"),
        ({"state": "reconnecting", "since": "2026-05-01T10:00:00+00:00", "last_error": "connection lost"}, "reconnecting since 2026-05-01T10:00:00+00:00: connection lost"),
        ({"state": "connecting", "step": "uploading 40 %"}, "still coming up (uploading 40 %)"),
        (status(rtt_ms=None, last_error="no Pong within 5 s"), "not healthy: its last health Ping failed (no Pong within 5 s)"),
        (status(port_refused={"cause": "x"}), "another account holds its remote port"),
        (status(load=None), "no load figures yet"),
        (status(sessions=None), "did not report a session count"),
    ],
)
def test_a_host_that_cannot_take_work_says_why(row: dict[str, Any] | None, reason: str) -> None:
    candidate = assess("pc", row, PoolSettings())
    assert not candidate.eligible and reason in str(candidate.why_not)
    assert choose([candidate]) is None and candidate.why == candidate.why_not


def test_stale_figures_are_not_used() -> None:
    row = status()
    row["load"]["age_s"] = 16.0  # past 3 keepalives of 5 s, and the 15 s floor
    assert "its load figures are 16 s old" in str(assess("pc", row, PoolSettings()).why_not)
    row["load"]["age_s"] = 14.0
    assert assess("pc", row, PoolSettings()).eligible


def test_the_cap_counts_the_reservations_too() -> None:
    capped = PoolSettings(max_sessions=3)
    assert assess("pc", status(sessions=2), capped).eligible
    full = assess("pc", status(sessions=2), capped, reserved=1)
    assert full.why_not == "at its cap: 2 sessions + 1 reserved of max_sessions 3"
    assert assess("pc", status(sessions=3), capped).why_not == "at its cap: 3 sessions of max_sessions 3"


def test_missing_cpu_and_memory_count_as_nothing_and_say_so() -> None:
    row = status(cpu=None)
    row["load"]["mem_total_mb"] = None
    candidate = assess("pc", row, PoolSettings())
    assert candidate.eligible and candidate.score == 0.0
    choose([candidate])
    assert "CPU load not measured yet (0)" in candidate.why and "memory not measured (0)" in candidate.why


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"pool": "yes"}, "pool must be true or false"),
        ({"max_sessions": 0}, "max_sessions must be a whole number of sessions, at least 1"),
        ({"max_sessions": 2.5}, "max_sessions must be a whole number"),
        ({"max_sessions": True}, "max_sessions must be a whole number"),
        ({"weight": 0}, "weight must be a number above 0"),
        ({"weight": float("inf")}, "weight must be a number above 0"),
        ({"weight": "2"}, "weight must be a number above 0"),
    ],
)
def test_bad_pool_keys_name_the_key_and_the_fix(table: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        pool_settings("pc", table)
    assert raised.value.cause.startswith("[hosts.pc] ") and message in raised.value.cause and raised.value.fix


def test_pool_keys_default_to_an_uncapped_host_of_weight_1() -> None:
    assert pool_settings("pc", {}) == PoolSettings(False, None, 1.0)
    assert pool_settings("pc", {"pool": True, "max_sessions": 8, "weight": 2}) == PoolSettings(True, 8, 2.0)


def test_config_files_are_checked_for_the_pool_keys(tmp_path: Any) -> None:
    from gt_remote.base.config import load_config

    config = tmp_path / "config.toml"
    config.write_text('[hosts.pc1]\npool = true\nmax_sessions = 4\nweight = 1.5\n[hosts.pc2]\nmax_sessions = "lots"\n')
    config.chmod(0o600)
    with pytest.raises(ConfigError) as raised:
        load_config(config)
    assert str(raised.value).startswith(f"{config}: [hosts.pc2] max_sessions must be a whole number")
    config.write_text("[hosts.pc1]\npool = true\nmax_sessions = 4\nweight = 1.5\n")
    assert load_config(config)["pc1"]["weight"] == 1.5


# --- reservations ---------------------------------------------------------------------------


def test_a_reservation_holds_until_a_later_reading_shows_its_session() -> None:
    picked = Reservation("pc", at=100.0, baseline=2)
    assert pending([picked], sessions=2, measured_at=101.0, now=101.0) == [picked]  # not there yet
    assert pending([picked], sessions=3, measured_at=99.0, now=101.0) == [picked]  # a reading from before the pick proves nothing
    assert pending([picked], sessions=3, measured_at=101.0, now=101.0) == []  # shown
    assert pending([picked], sessions=None, measured_at=None, now=101.0) == [picked]


def test_a_reservation_ends_after_a_few_seconds_whatever_the_figures() -> None:
    picked = Reservation("pc", at=100.0, baseline=0)
    assert pending([picked], 0, 100.5, now=100.0 + RESERVATION_TTL_S - 0.1) == [picked]
    assert pending([picked], 0, 100.5, now=100.0 + RESERVATION_TTL_S) == []
    assert pending([picked], 0, 100.5, now=99.0) == [], "one from the future (a clock set back) is not held"


def test_the_oldest_reservations_show_first() -> None:
    first, second, third = (Reservation("pc", at=100.0 + i, baseline=1) for i in range(3))
    assert pending([third, first, second], sessions=2, measured_at=105.0, now=105.0) == [second, third]
    assert pending([third, first, second], sessions=4, measured_at=105.0, now=105.0) == []
    # a reading taken between the picks shows only the ones before it
    assert pending([first, second, third], sessions=4, measured_at=101.5, now=105.0) == [third]


def test_reservations_spread_picks_started_together_by_room() -> None:
    """Ten picks, one after the other under the lock, each seeing the reservations before it:
    equal hosts take turns, a capped one stops at its cap, a weighted one takes its share."""
    rows = {"a": status(), "b": status(), "c": status()}

    def ten(settings: dict[str, PoolSettings]) -> dict[str, int]:
        reservations: list[Reservation] = []
        for _ in range(10):
            held = {host: len(pending([r for r in reservations if r.host == host], 0, 99.0, 100.0)) for host in rows}
            winner = choose([assess(host, rows[host], settings[host], held[host]) for host in rows])
            assert winner is not None
            reservations.append(Reservation(winner.host, 100.0, 0))
        return {host: sum(r.host == host for r in reservations) for host in rows}

    assert sorted(ten({host: PoolSettings() for host in rows}).values()) == [3, 3, 4]
    assert ten({"a": PoolSettings(max_sessions=2), "b": PoolSettings(), "c": PoolSettings()}) == {"a": 2, "b": 4, "c": 4}
    spread = ten({"a": PoolSettings(weight=3.0), "b": PoolSettings(), "c": PoolSettings()})
    assert spread["a"] == 6 and spread["b"] + spread["c"] == 4, spread


def test_a_reservation_survives_its_file() -> None:
    picked = Reservation("pc", 100.5, 3, "polecat-7")
    assert Reservation.from_dict(picked.to_dict()) == picked
    for garbled in (None, [], {"host": 3}, {"host": "pc", "at": "soon", "baseline": 1}, {"host": "pc", "at": 1.0, "baseline": -1}, {"host": "pc", "at": float("nan"), "baseline": 0}):
        assert Reservation.from_dict(garbled) is None


def test_a_host_short_of_memory_loses_to_one_with_room() -> None:
    tight = assess("tight", status(sessions=1, available=2048, total=16384), PoolSettings())  # 1 + 4 × 0.875 = 4.5
    roomy = assess("roomy", status(sessions=3), PoolSettings())
    assert choose([tight, roomy]) is roomy
    assert "memory in use 0.88" in tight.why
