"""One event loop for a whole run, driven in steps from synchronous code.

The main job reads its corpus synchronously and hands packed batches to the executor chunk by
chunk. If each chunk ran on an event loop of its own, everything that paces a run (the rate
limiter's window, the adaptive concurrency, the circuit breaker, a provider's Retry-After pause,
a virtual clock) would start again at every chunk boundary. A :class:`LoopHost` keeps one loop for
the run instead: ``host.run(coro)`` runs the loop until ``coro`` is done, and tasks started in an
earlier step carry on in the next one. Between steps the loop is paused (a virtual clock does not
move; calls in flight in worker threads go on).

Steps run in the caller's thread when it has no running loop (Ctrl-C cancels the step, as
``asyncio.run`` does), else (a notebook's loop is running) in a thread of the host's own, always
the same one, with the caller's context variables.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from toolkit.execution._vclock import VirtualTimeLoop

T = TypeVar("T")


class LoopHost:
    """The loop of one run (virtual time if ``virtual``); see the module docstring."""

    def __init__(self, virtual: bool = False) -> None:
        self.virtual = virtual
        self._runner: asyncio.Runner | None = None
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._owner: int | None = None  # the thread the loop runs in
        self._lock = threading.Lock()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run the loop until ``coro`` is done; returns its result."""
        if self._owner is None:
            try:
                asyncio.get_running_loop()
                self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="batchx-loop")
            except RuntimeError:
                self._owner = threading.get_ident()
        if self._pool is None:
            return self._step(coro)
        context = contextvars.copy_context()
        return self._pool.submit(context.run, self._step, coro).result()

    def _step(self, coro: Coroutine[Any, Any, T]) -> T:
        with self._lock:
            if self._runner is None:
                self._runner = asyncio.Runner(loop_factory=VirtualTimeLoop if self.virtual else None)
            return self._runner.run(coro)

    def time(self) -> float:
        """The loop's clock (0 before the first step)."""
        return self._runner.get_loop().time() if self._runner is not None else 0.0

    def close(self) -> None:
        """Close the loop (tasks still pending are cancelled) and the host's thread."""
        runner, self._runner = self._runner, None
        if runner is not None:
            if self._pool is not None:
                self._pool.submit(runner.close).result()
            else:
                runner.close()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self._owner = None
