"""What one end of a resumable stream keeps: the outbox of bytes the peer's application
has not taken, and the budget those outboxes share across an end's streams. Sans-IO, stdlib
only, Python 3.8 syntax (the relay is built from it)."""

from __future__ import annotations

from collections import deque
from typing import Deque, Dict, Generic, List, TypeVar, Union

from gt_remote.protocol.frames import BUDGET, SMALL

try:
    from typing import Protocol
except ImportError:  # pragma: no cover (3.8 has it; this keeps the build honest)
    Protocol = object  # type: ignore[assignment,misc]

Chunk = Union[bytes, memoryview]


class Outbox:
    """The bytes the peer's application has not taken, from stream position `start` to `end`, kept as
    the chunks they came in: appending and dropping never copy what is kept. Reading from a
    position is how both a plain flush and a replay find their bytes: there is no second
    queue of "not yet sent" chunks to keep in step with this one."""

    def __init__(self) -> None:
        self.chunks: Deque[bytes] = deque()
        self.head = 0  # bytes of chunks[0] before `start`
        self.start = 0
        self.end = 0

    def __len__(self) -> int:
        return self.end - self.start

    def append(self, data: bytes) -> None:
        chunks = self.chunks
        if chunks and len(chunks[-1]) + len(data) <= SMALL:
            chunks[-1] = chunks[-1] + data
        else:
            chunks.append(data)
        self.end += len(data)

    def drop_to(self, position: int) -> int:
        """The peer has everything before `position`: let it go; how many bytes were dropped."""
        position = min(position, self.end)
        if position <= self.start:
            return 0
        dropped, count = position - self.start, position - self.start + self.head
        chunks = self.chunks
        while chunks and count >= len(chunks[0]):
            count -= len(chunks.popleft())
        self.head = count if chunks else 0
        self.start = position
        return dropped

    def read(self, position: int, most: int) -> List[Chunk]:
        """Up to `most` bytes from `position` on, as views of the kept chunks."""
        skip = position - self.start + self.head
        pieces: List[Chunk] = []
        for chunk in self.chunks:
            if skip >= len(chunk):
                skip -= len(chunk)
                continue
            piece: Chunk = memoryview(chunk)[skip : skip + most] if skip or len(chunk) - skip > most else chunk
            skip = 0
            pieces.append(piece)
            most -= len(piece)
            if most <= 0:
                break
        return pieces

    def clear(self) -> None:
        self.chunks = deque()
        self.head = 0
        self.start = self.end


class Member(Protocol):
    """What the budget needs of a stream: its outbox, whether the budget stopped its reading,
    and a way to say so (Stream, in stream.py)."""

    outbox: Outbox
    budget_paused: bool

    def _update_reading(self) -> None: ...


M = TypeVar("M", bound=Member)


class Budget(Generic[M]):
    """The outbox bytes of all streams of one end: past `limit`, the stream whose outbox is
    the largest stops reading its application, until the total falls to half of `limit`."""

    def __init__(self, limit: int = BUDGET) -> None:
        self.limit = limit
        self.total = 0
        self.peak = 0
        self.members: Dict[int, M] = {}
        self.changed: List[M] = []  # streams whose reading changed for another's sake

    def join(self, stream: M) -> None:
        self.members[id(stream)] = stream

    def leave(self, stream: M) -> None:
        self.members.pop(id(stream), None)

    def stop_the_largest(self) -> None:
        """Past the limit: the stream with the largest outbox that still reads stops reading."""
        reading = [s for s in self.members.values() if not s.budget_paused and s.outbox]
        if reading:
            largest = max(reading, key=lambda s: len(s.outbox))
            largest.budget_paused = True
            largest._update_reading()
            self.changed.append(largest)

    def shrink(self, size: int) -> None:
        self.total -= size
        if self.total <= self.limit // 2:
            for stream in self.members.values():
                if stream.budget_paused:
                    stream.budget_paused = False
                    stream._update_reading()
                    self.changed.append(stream)

    def take_changed(self) -> List[M]:
        changed, self.changed = self.changed, []
        return changed
