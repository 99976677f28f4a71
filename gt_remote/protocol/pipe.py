"""What both ends' adapters do with a stream core, written once: move its bytes to the
channel and to the application's socket, act on its decisions (reading, the application's
end, the stream's end) and keep one timer for whatever it says is due.

It calls methods of the objects it is given (an event loop, an asyncio-style transport for
the application) and imports nothing: the laptop (gt_remote/tunnel/resumable.py) and the
relay (gt_remote/remote/relay/relay_agent.py, built with this file inlined) subclass it. Stdlib only,
Python 3.8 syntax, as the core.
"""

from __future__ import annotations

from typing import Any, Optional

from gt_remote.protocol.stream import LINGER, TRIM_AFTER, Stream


def _malloc_trim() -> Any:
    """glibc's malloc_trim, or None: after a busy stream ends, its freed buffers go back to
    the system instead of staying in the heap."""
    try:
        import ctypes

        return ctypes.CDLL(None).malloc_trim
    except Exception:  # noqa: BLE001 - not glibc: the allocator keeps its own policy
        return None


MALLOC_TRIM = _malloc_trim()


class StreamPipe:
    """One stream's IO at one end. A subclass says how to write to its channel
    (`send_to_channel`), which transport is its application (`app`), and what else to do
    when the stream ends (`ended_here`)."""

    core: Stream
    loop: Any

    def start_pipe(self, core: Stream, loop: Any) -> None:
        self.core = core
        self.loop = loop
        core.io = self
        self.app_reading = True  # the application's socket is read
        self.timer: Optional[Any] = None
        self.timer_at = 0.0
        self.ended = False

    # --- what a subclass provides ---------------------------------------------------------

    def send_to_channel(self, data: bytes) -> None:
        raise NotImplementedError

    def app(self) -> Optional[Any]:
        """The application's transport while it can take bytes, else None."""
        raise NotImplementedError

    def ended_here(self) -> None:
        """The stream is over: forget it, close the channel."""
        raise NotImplementedError

    # --- moving bytes ----------------------------------------------------------------------

    def app_buffered(self) -> int:
        app = self.app()
        return app.get_write_buffer_size() if app is not None else 0

    def pump(self) -> None:
        """Move what the core has for the channel and the application; act on what it decided."""
        core = self.core
        data = core.to_channel()
        while data:
            self.send_to_channel(data)
            data = core.to_channel() if core.more_to_send else b""
        if core.inbox or core.received_eof or core.finished or core.reading is not self.app_reading:
            self.to_app(core)
        if core.budget.changed:
            for other in core.budget.take_changed():
                if other.io is not None and other.io is not self:
                    other.io.apply_reading()
        if core.finished:
            self.end()
            return
        # The window's end only moves later (a timer set for it fires and looks again), so only
        # a sooner ack, or no timer at all, needs a new one.
        ack_due = core.ack_due
        if self.timer is None or (ack_due is not None and ack_due < self.timer_at):
            due = core.deadline
            if due is not None:
                if self.timer is not None:
                    self.timer.cancel()
                self.timer_at = due
                self.timer = self.loop.call_at(due, self._due)

    def to_app(self, core: Stream) -> None:
        """What the application should get, its end, and whether it is read."""
        app = self.app()
        if app is None:
            return
        data = core.to_app()
        while data:
            app.write(data)  # may pause it (pause_writing): to_app then has nothing more
            data = core.to_app()
        if core.eof_for_app:
            core.gave_eof()
            if app.can_write_eof():
                app.write_eof()
        if core.reading is not self.app_reading:
            self.apply_reading()

    def apply_reading(self) -> None:
        app = self.app()
        if app is None or self.core.reading == self.app_reading:
            return
        self.app_reading = self.core.reading
        if self.app_reading:
            app.resume_reading()
        else:
            app.pause_reading()

    def _due(self) -> None:
        self.timer = None
        self.core.tick(self.loop.time(), self.app_buffered())
        self.pump()

    def on_frames(self, frames: Any) -> None:
        """Frames from the channel (FrameError: they break the protocol; the caller decides)."""
        self.core.on_frames(frames, self.loop.time(), self.app_buffered())
        self.pump()

    def app_took(self) -> None:
        """The application's socket drained (its resume_writing): acknowledge, move on."""
        self.core.app_drained(self.app_buffered(), self.loop.time())
        self.pump()

    # --- ending ----------------------------------------------------------------------------

    def end(self) -> None:
        """The core is done. The application already has every byte that arrived and its end;
        its socket closes once it ends its side too, or after a linger in which what it still
        sends is read and dropped: a FIN, never a reset."""
        if self.ended:
            return
        self.ended = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.ended_here()
        app = self.app()
        if app is None:
            self.trim()
        elif self.core.sent_eof:
            app.close()  # it ended its side: nothing of it can be cut off
        else:
            app.resume_reading()
            self.loop.call_later(LINGER, app.close)

    def app_ended_its_side(self) -> None:
        """The application's EOF: one more position; if the stream was lingering, it can close."""
        self.core.app_eof()
        self.pump()
        app = self.app()
        if self.ended and app is not None:
            app.close()

    def app_lost(self) -> None:
        """The application's socket is gone: the peer still gets what it sent, then the close."""
        self.core.app_closed()
        self.pump()
        if self.ended:
            self.trim()

    def trim(self) -> None:
        """Give a busy stream's freed memory back, once its sockets have let go of it."""
        core = self.core
        if MALLOC_TRIM is not None and core.sent + core.received >= TRIM_AFTER:
            self.loop.call_later(0.1, MALLOC_TRIM, 0)
