"""Virtual time for asyncio: an event loop whose clock jumps to the next timer instead of waiting.

Everything that reads ``loop.time()`` and sleeps with ``asyncio.sleep`` (the executor, its rate
limiter and backoff, the emulated providers) then runs a day of simulated traffic in seconds.
Real I/O still works: ready sockets are always served before the clock moves. Work handed to a
thread with ``run_in_executor`` / ``asyncio.to_thread`` (DSPy prepares each call in one) holds the
clock until it finishes, so it takes no virtual time and cannot let timers fire early; providers
whose latency should be simulated must sleep with ``asyncio.sleep`` (the emulated provider does).
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class _InstantSelector(selectors.DefaultSelector):
    """A selector that never sleeps: a timeout advances the loop's virtual clock instead."""

    def __init__(self, loop: VirtualTimeLoop) -> None:
        super().__init__()
        self._loop = loop

    def select(self, timeout: float | None = None):
        ready = super().select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None or self._loop.threads_busy:  # only a thread's completion can wake us
            return super().select(None)
        self._loop.advance(timeout)
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self, start: float = 0.0) -> None:
        self._virtual_now = start
        super().__init__(selector=_InstantSelector(self))
        self.threads_busy = 0

    def time(self) -> float:
        return self._virtual_now

    def run_in_executor(self, executor, func, *args):  # noqa: ANN001 - asyncio's signature
        future = super().run_in_executor(executor, func, *args)
        self.threads_busy += 1

        def done(_: asyncio.Future) -> None:
            self.threads_busy -= 1

        future.add_done_callback(done)
        return future

    def advance(self, seconds: float) -> None:
        self._virtual_now += max(0.0, seconds)


def run_virtual(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on a :class:`VirtualTimeLoop`."""
    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        return runner.run(coro)
