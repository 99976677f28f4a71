"""When to try again: quick retries early in an outage, then exponential backoff with jitter.

A fresh policy starts after every working link, so a drop after a good connection is
retried at once (no autossh-style fast-retry penalty that grows across separate drops).
For the first FAST_PHASE seconds of waiting, attempts stay at most FAST_WAIT (+ jitter)
apart: most outages (Wi-Fi, a partition, a restart) are short, and a doubling wait would
land the next attempt seconds after the network came back. Longer outages back off to
MAX_WAIT, and a wake or network change (gt_remote/tunnel/wake.py) cuts any wait short.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception

from gt_remote.base.errors import GtRemoteError

INITIAL_WAIT = 0.2
FAST_WAIT = 0.5
FAST_JITTER = 0.2
FAST_PHASE = 120.0  # seconds of waiting, summed, before the backoff grows
MAX_WAIT = 30.0
JITTER = 0.5


class OutageWait:
    """The wait before each attempt: capped at FAST_WAIT early on, then doubling to `max_wait`."""

    def __init__(self, max_wait: float = MAX_WAIT) -> None:
        self.max_wait = max_wait
        self.slow_attempts = 0

    def __call__(self, state: RetryCallState) -> float:
        if state.idle_for < FAST_PHASE:
            return min(INITIAL_WAIT * 2 ** (state.attempt_number - 1), FAST_WAIT) + random.uniform(0, FAST_JITTER)
        self.slow_attempts += 1
        return min(FAST_WAIT * 2**self.slow_attempts, self.max_wait) + random.uniform(0, JITTER)


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, GtRemoteError) and exc.transient


def reconnect_policy(
    on_wait: Callable[[BaseException, float], None],
    max_wait: float = MAX_WAIT,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> AsyncRetrying:
    """Retry transient errors forever (see OutageWait for when); re-raise the first final one.

    `on_wait(error, wall_time_of_next_attempt)` is told before each sleep, for `status`.
    """

    def before_sleep(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        delay = state.upcoming_sleep
        if error is not None:
            on_wait(error, time.time() + delay)

    return AsyncRetrying(
        retry=retry_if_exception(is_transient),
        wait=OutageWait(max_wait),
        before_sleep=before_sleep,
        sleep=sleep,
        reraise=True,
    )
