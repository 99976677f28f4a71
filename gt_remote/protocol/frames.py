"""The resumable stream protocol's wire: frames, their limits, and the hello and reply
every channel begins with (the format is described in stream.py). Sans-IO, stdlib only,
Python 3.8 syntax: the relay is built from it (gt_remote/remote/relay/build.py)."""

from __future__ import annotations

import json
import math
import string
import struct
from typing import Any, Dict, List, Optional, Tuple

HEADER = struct.Struct(">cI")
ACK = struct.Struct(">QQ")  # positions received, bytes consumed
CAP = 4 * 1024 * 1024  # bytes per stream and direction the peer's application has not taken
BUDGET = 64 * 1024 * 1024  # outbox bytes across all streams of one end
ACK_EVERY = 512 * 1024
ACK_DELAY = 0.05
FRAME_DATA = 256 * 1024  # the most data one D frame carries
BATCH = 256 * 1024  # the most data one call of `to_channel` hands out
HIGH_WATER = 128 * 1024  # a transport's write buffer beyond this: stop writing to it (adapters)
SMALL = 16 * 1024  # small writes are merged in the outbox, so a trickle is not a pile of objects
COALESCE = 64 * 1024  # up to this, what is due goes as one write (a message and its ack in one SSH
# packet); past it, one write per piece, never copied again to be joined
LINGER = 5.0  # an ended application's socket is read (and dropped) this long, so it gets FIN, not RST
MAX_FRAME = 1024 * 1024
MAX_HELLO = 16 * 1024
MAX_REPLY = 64 * 1024
MAX_WINDOW = 24 * 3600.0
MAX_HEARTBEAT = 3600.0
MAX_STREAMS = 1024
MAX_POSITION = 1 << 62
MAX_LEASE_TTL = 24 * 3600
ENDED_KEPT = 4096  # ids of ended streams the relay remembers, so a late retry cannot revive one
LEASE_NAME_CHARS = frozenset(string.ascii_letters + string.digits + "._-")
TRIM_AFTER = 1024 * 1024  # a stream that moved this much gives its memory back when it ends

LAPTOP = "laptop"  # the end that says hello and sends heartbeats
RELAY = "relay"  # the end that answers them

HEARTBEAT_FRAME = HEADER.pack(b"K", 0)
CLOSE_FRAME = HEADER.pack(b"C", 0)
EOF_FRAME = HEADER.pack(b"E", 0)


class FrameError(ValueError):
    """The bytes on a channel are not frames of this protocol: that channel is broken."""


class HelloError(ValueError):
    """A hello the relay will not serve: answered with the reason, then closed."""


class StreamGone(Exception):
    """The far end no longer has the stream, or refused it: it ends cleanly."""


def frame(kind: bytes, payload: bytes = b"") -> bytes:
    return HEADER.pack(kind, len(payload)) + payload


class FrameReader:
    """Splits a byte stream into (type, payload) frames, bounded by `limit` (and the first
    frame, the hello or its reply, by `first_limit`)."""

    def __init__(self, limit: int = MAX_FRAME, first_limit: Optional[int] = None) -> None:
        self.buffer = bytearray()
        self.limit = limit
        self.first_limit = first_limit

    def feed(self, data: bytes) -> List[Tuple[bytes, bytes]]:
        buffered = bool(self.buffer)
        if buffered:
            self.buffer += data
            view = memoryview(self.buffer)
        else:
            view = memoryview(data)  # the common case: frames straight from `data`, no buffering
        frames = []
        start, size = 0, len(view)
        try:
            while size - start >= HEADER.size:
                kind, length = HEADER.unpack_from(view, start)
                limit = self.limit if self.first_limit is None else self.first_limit
                if length > limit:
                    raise FrameError("a frame of %d bytes (at most %d)" % (length, limit))
                end = start + HEADER.size + length
                if end > size:
                    break
                frames.append((kind, view[start + HEADER.size : end].tobytes()))
                self.first_limit = None
                start = end
        finally:
            view.release()
        if buffered:
            del self.buffer[:start]
        elif start < size:
            self.buffer += data[start:]
        return frames


# --- hellos and replies ---------------------------------------------------------------------


def _seconds(value: Any, name: str, most: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise HelloError("%s must be a number of seconds" % name)
    if isinstance(value, int) and not 0 < value <= most:  # no float(): a 400-digit int overflows
        raise HelloError("%s must be more than 0 and at most %g s" % (name, most))
    seconds = float(value)
    if not (math.isfinite(seconds) and 0 < seconds <= most):
        raise HelloError("%s must be more than 0 and at most %g s" % (name, most))
    return seconds


def _stream_id(value: Any) -> str:
    if not isinstance(value, str) or not 32 <= len(value) <= 64 or not all(c in string.hexdigits for c in value):
        raise HelloError("bad stream id")
    return value


def _count(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_POSITION:
        raise HelloError("%s must be a byte count" % name)
    return value


def _lease_name(value: Any) -> str:
    """A file name in the leases directory: no path, no dot file and no *.tmp (temporaries)."""
    if not isinstance(value, str) or not 1 <= len(value) <= 120 or value.startswith(".") or value.endswith(".tmp") or not set(value) <= LEASE_NAME_CHARS:
        raise HelloError("bad lease name")  # a .tmp name would be skipped by every lister
    return value


def _owner(value: Any) -> str:
    """Whose streams these are (the supervisor's lease name): `down` closes them by it."""
    return "" if value is None else _lease_name(value)


def _lease_ttl(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_LEASE_TTL:
        raise HelloError("ttl must be a whole number of seconds, more than 0 and at most %d" % MAX_LEASE_TTL)
    return value


def _timing(request: Dict[str, Any]) -> Dict[str, float]:
    heartbeat = request.get("heartbeat")
    return {
        "window": _seconds(request.get("window", 900), "window", MAX_WINDOW),
        "heartbeat": 0.0 if heartbeat is None else _seconds(heartbeat, "heartbeat", MAX_HEARTBEAT),
    }


def parse_hello(payload: bytes) -> Dict[str, Any]:
    """A hello's fields, checked; HelloError names what is wrong."""
    try:
        request = json.loads(payload.decode("utf-8"))
    except (ValueError, RecursionError):  # RecursionError: JSON nested too deeply
        raise HelloError("malformed hello: not JSON") from None
    if not isinstance(request, dict):
        raise HelloError("malformed hello: not a JSON object")
    op = request.get("op")
    if op == "stats":
        return {"op": "stats", "owner": _owner(request.get("owner"))}
    if op == "new":
        parsed: Dict[str, Any] = {"op": "new", "id": _stream_id(request.get("id")), "owner": _owner(request.get("owner"))}
        parsed.update(_timing(request))
        return parsed
    if op == "resume":
        received, consumed = _count(request.get("received"), "received"), _count(request.get("consumed", 0), "consumed")
        resumed: Dict[str, Any] = {"op": "resume", "id": _stream_id(request.get("id")), "received": received, "consumed": min(consumed, received), "owner": _owner(request.get("owner"))}
        if request.get("create") is True:
            resumed["create"] = True
            resumed.update(_timing(request))
        return resumed
    if op == "close":
        if "owner" in request:
            return {"op": "close", "owner": _lease_name(request.get("owner")), "ids": []}
        ids = request.get("ids")
        if not isinstance(ids, list) or len(ids) > MAX_STREAMS:
            raise HelloError("ids must be a list of at most %d stream ids" % MAX_STREAMS)
        return {"op": "close", "owner": "", "ids": [_stream_id(one) for one in ids]}
    if op == "lease":
        return {"op": "lease", "name": _lease_name(request.get("name")), "ttl": _lease_ttl(request.get("ttl"))}
    if op == "load":  # the machine's load figures, read from /proc: no process started
        return {"op": "load"}
    if op == "listen":
        listened: Dict[str, Any] = {"op": "listen", "owner": _lease_name(request.get("owner")), "port": _port(request.get("port"))}
        listened.update(_timing(request))
        return listened
    raise HelloError("unknown op")


def _port(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise HelloError("port must be a TCP port number (1-65535)")
    return value


def announcement(stream_id: str) -> bytes:
    """On a listen channel: a connection was accepted, and its stream waits to be attached."""
    return frame(b"N", json.dumps({"id": stream_id}).encode())


def refusal_notice(reason: str, total: int) -> bytes:
    """On a listen channel: connections were refused (another account's), `total` so far, for `status`."""
    return frame(b"N", json.dumps({"refused": reason[:300], "total": total}).encode())


def parse_notice(kind: bytes, payload: bytes) -> Tuple[str, str, int]:
    """A listen channel's frame from the relay: ("stream", id, 0), ("refused", why, total so
    far) or ("heartbeat", "", 0); FrameError for anything else."""
    if kind == b"K":
        return "heartbeat", "", 0
    if kind != b"N":
        raise FrameError("a %r frame on a listen channel" % (kind,))
    try:
        notice = json.loads(payload)
    except (ValueError, RecursionError):
        raise FrameError("a notice that is not JSON") from None
    if isinstance(notice, dict) and "id" in notice:
        try:
            return "stream", _stream_id(notice["id"]), 0
        except HelloError:
            raise FrameError("a notice with a bad stream id") from None
    if isinstance(notice, dict) and isinstance(notice.get("refused"), str):
        total = notice.get("total")
        return "refused", notice["refused"][:300], total if isinstance(total, int) and not isinstance(total, bool) else 1
    raise FrameError("a notice of no known kind")


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_reply(kind: bytes, payload: bytes, acked: int, most: int) -> Tuple[int, int, int]:
    """The relay's answer to a stream's hello: (positions it received, bytes its server
    took, bytes it replays), or StreamGone. `acked..most` is what it may claim to have."""
    if kind != b"R":
        raise StreamGone("the relay answered with a %r frame, not a reply" % (kind,))
    try:
        answer = json.loads(payload)
    except (ValueError, RecursionError):
        raise StreamGone("the relay's reply is not JSON") from None
    if not isinstance(answer, dict):
        raise StreamGone("the relay's reply is not a JSON object")
    if "error" in answer:
        raise StreamGone(str(answer["error"])[:200])
    counts = answer.get("received"), answer.get("consumed", 0), answer.get("replaying", 0)
    if not all(_is_count(count) for count in counts):
        raise StreamGone("the relay's reply has no byte counts")
    received, consumed, replaying = (int(str(count)) for count in counts)  # ints: checked above
    if not acked <= received <= most:
        raise StreamGone("the relay claims %d positions received, we sent %d" % (received, most))
    return received, max(0, min(consumed, received)), max(0, min(replaying, CAP + MAX_FRAME))
