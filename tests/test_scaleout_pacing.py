"""The global pace of Ray workers (toolkit.jobs.scaleout._pacing.GlobalPace), run in this process without Ray:
slots owned by a worker come back when it dies, its queued waits are dropped, a withdrawn wait
takes no slot, and no wait is endless."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from toolkit.execution import ConcurrencyPolicy, ExecutionPolicy, RateLimitPolicy
from toolkit.jobs.scaleout._pacing import GlobalPace

T = TypeVar("T")
ONE_AT_A_TIME = ExecutionPolicy(concurrency=ConcurrencyPolicy.parse("1"))


async def _soon(coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
    """``coro`` as a task, given a moment to queue (a wait that must not block the test)."""
    task = asyncio.ensure_future(coro)
    await asyncio.sleep(0.01)
    return task


def test_a_dead_worker_s_slot_comes_back_and_its_queued_waits_are_dropped() -> None:
    async def scenario() -> None:
        pace = GlobalPace(ONE_AT_A_TIME, patience=60)
        assert await pace.acquire_slot("dead", 0) is not None  # the only slot, held by a worker that dies mid-call
        queued_dead = await _soon(pace.acquire_slot("dead", 1))
        queued_live = await _soon(pace.acquire_slot("live", 0))
        assert await pace.release_owner("dead") == 1
        assert await asyncio.wait_for(queued_dead, 1) is None  # dropped, not granted to a caller that has gone
        assert await asyncio.wait_for(queued_live, 1) is not None
        await pace.release_slot("dead", 0, "ok")  # a release sent just before the death: ignored
        assert (await pace.stats())["in_flight"] == 1 and await pace.acquire_slot("dead", 2) is None
        await pace.release_slot("live", 0, "ok")
        assert (await pace.stats())["in_flight"] == 0

    asyncio.run(scenario())


def test_a_withdrawn_wait_takes_no_slot_granted_or_not() -> None:
    async def scenario() -> None:
        pace = GlobalPace(ONE_AT_A_TIME, patience=60)
        await pace.acquire_slot("w", 0)
        waiting = await _soon(pace.acquire_slot("w", 1))
        await pace.abandon("w", 1)  # the run halted while it waited
        assert await asyncio.wait_for(waiting, 1) is None
        await pace.release_slot("w", 0, "ok")
        await pace.abandon("w", 2)  # withdrawn before its request arrived
        assert await pace.acquire_slot("w", 2) is None
        assert await pace.acquire_slot("w", 3) is not None and (await pace.stats())["in_flight"] == 1

    asyncio.run(scenario())


def test_a_wait_for_a_slot_that_never_comes_free_ends_after_patience() -> None:
    async def scenario() -> None:
        pace = GlobalPace(ONE_AT_A_TIME, patience=0.3)
        loop = asyncio.get_running_loop()
        await pace.acquire_slot("a", 0)  # held by a call that never ends
        start = loop.time()
        assert await asyncio.wait_for(pace.acquire_slot("b", 0), 5) is None
        assert 0.3 <= loop.time() - start < 1.0
        await pace.pause(0.5)  # a Retry-After pause is the gate moving: waits last past it
        start = loop.time()
        assert await asyncio.wait_for(pace.acquire_slot("b", 1), 5) is None
        assert loop.time() - start >= 0.7
        await pace.release_slot("a", 0, "ok")
        assert (await pace.stats())["in_flight"] == 0

    asyncio.run(scenario())


def test_a_dead_worker_s_queued_window_waits_are_dropped() -> None:
    async def scenario() -> None:
        pace = GlobalPace(ExecutionPolicy(rate=RateLimitPolicy(requests_per_minute=1, window=60)), patience=60)
        assert await pace.acquire_tokens("dead", 10) is not None
        queued = await _soon(pace.acquire_tokens("dead", 10))  # would wait a minute for the window
        await pace.release_owner("dead")
        assert await asyncio.wait_for(queued, 1) is None and await pace.acquire_tokens("dead", 1) is None

    asyncio.run(scenario())
