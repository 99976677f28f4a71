"""When to try again: exponential backoff with jitter across consecutive failures only.

A fresh policy starts after every working link, so a drop after a good connection is
retried at once (no autossh-style fast-retry penalty that grows across separate drops).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, wait_exponential_jitter

from gt_remote.base.errors import GtRemoteError

INITIAL_WAIT = 0.2
MAX_WAIT = 30.0
JITTER = 0.5


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, GtRemoteError) and exc.transient


def reconnect_policy(
    on_wait: Callable[[BaseException, float], None],
    max_wait: float = MAX_WAIT,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> AsyncRetrying:
    """Retry transient errors forever with capped backoff; re-raise the first final one.

    `on_wait(error, wall_time_of_next_attempt)` is told before each sleep, for `status`.
    """

    def before_sleep(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        delay = state.upcoming_sleep
        if error is not None:
            on_wait(error, time.time() + delay)

    return AsyncRetrying(
        retry=retry_if_exception(is_transient),
        wait=wait_exponential_jitter(multiplier=INITIAL_WAIT, max=max_wait, jitter=JITTER),
        before_sleep=before_sleep,
        sleep=sleep,
        reraise=True,
    )
