"""The heartbeat task of a RelayPath: it runs while streams are attached, ends with the last
one (at once, so an idle supervisor holds no task for it), and starts again for the next,
even one that arrives before the cancelled task has ended. Pure logic: fake streams that
count their heartbeats; the link is never used."""

from __future__ import annotations

import asyncio

from gt_remote.tunnel import resumable

BEAT = 0.01
DEADLINE = 10.0


class FakeLink:
    connection = None


class CountingStream:
    def __init__(self) -> None:
        self.beats = 0
        self.beaten = asyncio.Event()

    def heartbeat(self) -> None:
        self.beats += 1
        self.beaten.set()


def beat_tasks() -> list[asyncio.Task[object]]:
    return [task for task in asyncio.all_tasks() if getattr(task.get_coro(), "__qualname__", "") == "RelayPath._beat"]


def path_and_stream() -> tuple[resumable.RelayPath, CountingStream]:
    path = resumable.RelayPath(FakeLink(), "/relay", heartbeat=BEAT)  # type: ignore[arg-type]
    stream = CountingStream()
    path.streams.add(stream)  # type: ignore[arg-type]
    path.start_heartbeats()
    return path, stream


def test_the_last_stream_to_go_ends_the_heartbeats_at_once() -> None:
    async def run() -> None:
        path, stream = path_and_stream()
        await asyncio.wait_for(stream.beaten.wait(), DEADLINE)
        path.forget(stream)  # type: ignore[arg-type]
        await asyncio.sleep(0)  # one loop turn: the cancellation lands
        assert beat_tasks() == []

    asyncio.run(run())


def test_a_stream_that_comes_as_the_last_one_goes_still_gets_heartbeats() -> None:
    async def run() -> None:
        path, first = path_and_stream()
        await asyncio.wait_for(first.beaten.wait(), DEADLINE)
        path.forget(first)  # type: ignore[arg-type]
        second = CountingStream()
        path.streams.add(second)  # type: ignore[arg-type]
        path.start_heartbeats()  # before the cancelled task has ended
        await asyncio.wait_for(second.beaten.wait(), DEADLINE)
        assert len(beat_tasks()) == 1

    asyncio.run(run())


def test_heartbeats_go_on_while_any_stream_is_attached() -> None:
    async def run() -> None:
        path, first = path_and_stream()
        second = CountingStream()
        path.streams.add(second)  # type: ignore[arg-type]
        path.forget(first)  # type: ignore[arg-type]
        beats_of_first = first.beats
        for _ in range(2):  # two ticks after the first stream left
            second.beaten.clear()
            await asyncio.wait_for(second.beaten.wait(), DEADLINE)
        assert first.beats == beats_of_first  # a stream that left gets none
        assert len(beat_tasks()) == 1
        path.forget(second)  # type: ignore[arg-type]

    asyncio.run(run())
