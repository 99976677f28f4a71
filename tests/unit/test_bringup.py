"""The bring-up's parsing of the far side, without a remote: numbers are ASCII digits of bounded
length, a banner line cannot make a foreign owner look like ours, probe output and a server's
log tail of any bytes parse."""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from gt_remote.base.errors import GtRemoteError
from gt_remote.base.sanitize import MAX_DIGITS, ascii_int, visible
from gt_remote.remote import server as remote_server
from gt_remote.remote.lease import holders
from gt_remote.remote.ownership import Holder, owner_from, refusal
from gt_remote.remote.probe import build_of, facts_from_fields
from gt_remote.remote.scripts import parse_fields
from tests.e2e.helpers import PORT
from tests.unit.strategies import FUZZ, TEXT

# --- numbers and names from the far side (pure logic) -----------------------------------


def test_far_side_numbers_are_ascii_digits_with_a_length_limit() -> None:
    assert ascii_int("1234") == 1234
    for hostile in ("²", "١٢", "9" * 5000, "", " 12", "12 ", "-1", "+1", "0x10", None):
        assert ascii_int(hostile) is None, hostile
    facts = facts_from_fields({"pid": "²", "other": "9" * 5000 + ":1", "os": "Linux", "arch": "x86_64"})
    assert facts.pid is None and facts.other_port is None


def test_a_banner_line_cannot_make_a_foreign_owner_look_like_ours() -> None:
    assert owner_from({"uid": "1000", "listen_uid": "1001", "listen_user": "eve\x1b]0;x\x07"}).holder is Holder.FOREIGN
    assert owner_from({"uid": "1000", "listen_uid": "1001", "listen_user": "eve\x1b]0;x\x07"}).user is None  # not shown raw
    assert owner_from({"uid": "1000", "listen_uid": "²"}).holder is Holder.UNKNOWN
    assert owner_from({"uid": "1000", "listen_uid": "1000"}).holder is Holder.MINE_OTHER
    assert owner_from({"uid": "1000", "listen_uid": "1000", "listen_pid": "42"}).holder is Holder.OURS
    error = refusal(owner_from({"uid": "1000", "listen_uid": "1001", "listen_user": "eve"}), "pc", PORT)
    assert error is not None and "uid 1001, eve" in error.cause and f"127.0.0.1:{PORT}" in error.cause
    assert holders(["lease=pc-a", "lease=../../etc", "lease=" + "x" * 500, "noise"]) == ["pc-a"]


# --- the probe's key=value lines -------------------------------------------------------------


@FUZZ
@example(stdout="pid=²\nother=٣:1")  # #15.4: isdigit() passed these, int() refused them: "internal error"
@example(stdout="pid=" + "9" * 5000 + "\nother=1:" + "9" * 5000)  # past int()'s 4,300-digit limit
@given(stdout=st.lists(st.one_of(TEXT, st.tuples(st.sampled_from(["pid", "other", "version", "running", "running_version", "path", "arch", "os"]), TEXT).map("=".join)), max_size=12).map("\n".join))
def test_probe_output_of_any_far_side_parses(stdout: str) -> None:
    fields = parse_fields(stdout)
    assert all(key.isidentifier() and "\n" not in value for key, value in fields.items())
    facts = facts_from_fields(fields)
    for number in (facts.pid, facts.other_pid, facts.other_port):
        assert number is None or 0 <= number < 10**MAX_DIGITS
    assert facts.other_port is None or facts.other_port < 10**5
    for shown in (facts.version, facts.running_version):
        assert shown is None or shown == visible(shown)


@FUZZ
@given(log_tail=st.lists(TEXT, max_size=20), path=TEXT)
def test_a_servers_log_tail_becomes_a_typed_error_with_visible_text(log_tail: list[str], path: str) -> None:
    """What the remote server logged, quoted in `up`'s error when it exits or never answers."""
    for error in (remote_server._exited("ccmux-server", 9999, "gaming-pc", log_tail), remote_server._never_answered("ccmux-server", 9999, "gaming-pc", log_tail)):
        assert isinstance(error, GtRemoteError)
        assert error.cause == visible(error.cause)
    build = build_of(path)
    assert build is None or "/" not in build

