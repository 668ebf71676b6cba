"""Virtual time for asyncio: an event loop whose clock jumps to the next timer instead of waiting.

Everything that reads ``loop.time()`` and sleeps with ``asyncio.sleep`` (the executor, its rate
limiter and backoff, the emulated providers) then runs a day of simulated traffic in seconds.
Real I/O still works: ready sockets are always served before the clock moves. Work handed to
``run_in_executor`` / ``asyncio.to_thread`` (DSPy prepares and prices each call in one) runs at once
in the loop's thread: it takes no virtual time and cannot let timers fire early, and a thread
hand-off per call would cost more real time than the work. Providers whose latency should be
simulated must sleep with ``asyncio.sleep`` (the emulated provider does).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import selectors
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar, TypeVarTuple

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


class _InstantSelector(selectors.DefaultSelector):
    """A selector that never sleeps: a timeout advances the loop's virtual clock instead."""

    def __init__(self, loop: VirtualTimeLoop) -> None:
        super().__init__()
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = super().select(0)
        if ready or timeout == 0:
            return ready
        if timeout is None:
            return super().select(None)
        self._loop.advance(timeout)
        return []


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self, start: float = 0.0) -> None:
        self._virtual_now = start
        super().__init__(selector=_InstantSelector(self))

    def time(self) -> float:
        return self._virtual_now

    def run_in_executor(self, executor: concurrent.futures.Executor | None, func: Callable[[*Ts], T],
                        *args: *Ts) -> asyncio.Future[T]:
        """Run ``func`` now, in this thread; its result or exception goes to the awaiting caller."""
        future: asyncio.Future[T] = self.create_future()
        try:
            future.set_result(func(*args))
        except Exception as exc:  # noqa: BLE001 - any: delivered to the caller, as from a thread
            future.set_exception(exc)
        return future

    def advance(self, seconds: float) -> None:
        self._virtual_now += max(0.0, seconds)

    def call_at(self, when: float, callback: Callable[[*Ts], object], *args: *Ts,
                context: contextvars.Context | None = None) -> asyncio.TimerHandle:
        """A timer that moves the clock to its own time when it fires. asyncio fires timers that
        are due within the clock's resolution (1 ns) a little early; on a real clock time moves on,
        on this one it would not, and a task that sleeps until ``loop.time() >= t`` would wake
        short of ``t`` and sleep again forever, the loop never idle enough to advance."""
        return super().call_at(when, self._fire, when, callback, args, context=context)

    def _fire(self, when: float, callback: Callable[..., object], args: tuple[object, ...]) -> None:
        self._virtual_now = max(self._virtual_now, when)
        callback(*args)


def run_virtual(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on a :class:`VirtualTimeLoop`."""
    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        return runner.run(coro)
