"""The virtual clock: timers move it, and a task that sleeps until an exact time gets there."""

from __future__ import annotations

import asyncio

from toolkit.execution._vclock import VirtualTimeLoop, run_virtual


def test_sleeping_until_an_exact_time_terminates_where_floats_do_not_add_up() -> None:
    """asyncio fires a timer up to 1 ns early; the clock must then stand at the timer's time, or a
    task waiting for ``loop.time() >= target`` (a rate limit's resume time) sleeps again forever
    while other ready tasks keep the loop from advancing (a live-lock seen on 3,000 documents)."""
    start, target = 185.54220000099997, 185.54220000100003

    async def wait_until(loop: asyncio.AbstractEventLoop) -> int:
        sleeps = 0
        while loop.time() < target:
            await asyncio.sleep(target - loop.time())
            sleeps += 1
            assert sleeps < 5, "the clock does not reach the target"
        return sleeps

    async def busy(done: asyncio.Event) -> None:  # others' work: the loop is never idle meanwhile
        for _ in range(10_000):
            if done.is_set():
                return
            await asyncio.sleep(0)

    async def main() -> int:
        loop, done = asyncio.get_running_loop(), asyncio.Event()
        spinner = asyncio.create_task(busy(done))
        sleeps = await wait_until(loop)
        done.set()
        await spinner
        return sleeps

    with asyncio.Runner(loop_factory=lambda: VirtualTimeLoop(start)) as runner:
        assert runner.run(main()) == 1


def test_an_hour_of_sleeps_takes_no_real_time() -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        for _ in range(3600):
            await asyncio.sleep(1.0)
        return loop.time()

    assert run_virtual(main()) == 3600.0
