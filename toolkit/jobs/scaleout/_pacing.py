"""The global pace of a run's Ray workers: one named async actor (:class:`GlobalPace`) holds the
concurrency gate and the rate-limit window; each worker sees them through :class:`RemoteGate` and
:class:`RemoteWindow`, the interfaces of :class:`~toolkit.execution._limits.ConcurrencyGate` and
:class:`~toolkit.execution._limits.SlidingWindowLimiter` the executor uses.

Slots are owned: a worker (its ``owner`` name) asks for slot ``request`` and gives it back by the
same key. When the driver learns that a worker died it calls :meth:`GlobalPace.release_owner`: the
worker's slots come back and its queued waits (slots and window) are dropped, so a worker killed
mid-call leaks nothing. A wait that was cancelled in the worker (the run halted) is withdrawn
(:meth:`GlobalPace.abandon`), so a slot is never granted to a caller that has gone. Every wait for a
slot is bounded: when no slot comes free for ``patience`` seconds (no call ended, no pause ran
out) the worker gets :class:`GateStuck` instead of waiting for ever.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import Any

from toolkit.execution import Admission, ConcurrencyGate, ExecutionPolicy, SlidingWindowLimiter


class GateStuck(Exception):
    """No slot of the global concurrency gate came free for the runner's patience."""


class GlobalPace:
    """The global pace's state: a gate and a window on the actor's clock, slots by owner."""

    def __init__(self, policy: ExecutionPolicy, patience: float) -> None:
        self.gate = ConcurrencyGate(policy.concurrency)
        self.window = SlidingWindowLimiter(policy.rate)
        self.patience = patience
        self.held: dict[str, dict[int, float]] = {}  # owner -> {request: the gate's start time}
        self.waits: dict[tuple[str, int], asyncio.Task[Any]] = {}  # queued acquires, by (owner, request)
        self.gone: set[str] = set()  # owners the driver saw die
        self.abandoned: set[tuple[str, int]] = set()  # requests withdrawn before they were granted
        self.moved = 0.0  # loop time the gate last moved: a slot came back, or a pause runs out
        self._tokens = itertools.count()

    async def acquire_slot(self, owner: str, request: int) -> float | None:
        """The gate's start time of slot ``request``; None when refused (no slot came free for
        ``patience`` seconds, or the owner has gone)."""
        key = (owner, request)
        if owner in self.gone or key in self.abandoned:
            self.abandoned.discard(key)
            return None
        loop = asyncio.get_running_loop()
        since = loop.time()
        task = self.waits[key] = asyncio.ensure_future(self.gate.acquire())
        try:
            while not task.done():
                quiet = loop.time() - max(self.moved, since)
                if quiet >= self.patience:
                    task.cancel()
                    break
                await asyncio.wait({task}, timeout=self.patience - quiet)
            started = await task
        except asyncio.CancelledError:
            return None
        finally:
            if not task.done():
                task.cancel()  # our own caller was cancelled: the gate takes the wait back
            self.waits.pop(key, None)
        if owner in self.gone or key in self.abandoned:  # died or withdrew while it waited
            self.abandoned.discard(key)
            self._release(started, "error")
            return None
        self.held.setdefault(owner, {})[request] = started
        return started

    async def release_slot(self, owner: str, request: int, outcome: str) -> None:
        started = self.held.get(owner, {}).pop(request, None)
        if started is not None:  # else already given back for a dead owner
            self._release(started, outcome)

    async def abandon(self, owner: str, request: int) -> None:
        """Withdraw slot ``request``: its caller stopped waiting (granted or not, it comes back)."""
        if request in self.held.get(owner, {}):
            await self.release_slot(owner, request, "error")
            return
        self.abandoned.add((owner, request))
        if (task := self.waits.get((owner, request))) is not None:
            task.cancel()

    async def release_owner(self, owner: str) -> int:
        """``owner`` died: its slots come back, its queued waits are dropped; the slots returned."""
        self.gone.add(owner)
        slots = self.held.pop(owner, {})
        for started in slots.values():
            self._release(started, "error")
        for (who, _), task in list(self.waits.items()):
            if who == owner:
                task.cancel()
        return len(slots)

    def _release(self, started: float, outcome: str) -> None:
        self.gate.release(started, outcome)
        self.moved = max(self.moved, asyncio.get_running_loop().time())

    async def pause(self, seconds: float) -> None:
        until = asyncio.get_running_loop().time() + seconds
        self.gate.pause_until(until)
        self.moved = max(self.moved, until)

    async def half_open(self) -> None:
        self.gate.half_open()

    async def paced(self) -> None:
        self.gate.paced()

    async def learn(self, rpm: int | None, tpm: int | None) -> None:
        self.window.learn(rpm, tpm)

    async def throttled(self) -> None:
        self.window.throttled()

    async def acquire_tokens(self, owner: str, tokens: int) -> Admission | None:
        """Room for ``tokens`` in the window; None when the owner has gone."""
        key = (owner, -1 - next(self._tokens))
        if owner in self.gone:
            return None
        task = self.waits[key] = asyncio.ensure_future(self.window.acquire(tokens))
        try:
            return await task
        except asyncio.CancelledError:
            return None
        finally:
            if not task.done():
                task.cancel()
            self.waits.pop(key, None)

    async def stats(self) -> dict[str, Any]:
        return {"in_flight": self.gate.in_flight, "max_in_flight": self.gate.max_seen, "limit": self.gate.limit,
                "history": self.gate.history, "held": {o: len(s) for o, s in self.held.items() if s},
                "limits": self.window.limits}


class RemoteGate:
    """A worker's view of the global gate; ``started`` times are the worker's loop time, the gate's
    own stay on the actor."""

    def __init__(self, actor: Any, owner: str, patience: float, stuck: Callable[[str], None]) -> None:
        self.actor, self.owner, self.patience = actor, owner, patience
        self.stuck = stuck  # told why when the gate gives no slot (in time, or at all)
        self.in_flight = self.max_seen = 0
        self.history: list[tuple[float, int]] = []
        self._requests = itertools.count()
        self._paced = False

    def slot(self) -> _RemoteSlot:
        return _RemoteSlot(self, next(self._requests))

    def pause_until(self, when: float) -> None:
        self.actor.pause.remote(max(0.0, when - asyncio.get_running_loop().time()))

    def half_open(self) -> None:
        self.actor.half_open.remote()

    def paced(self) -> None:
        """The window knows the account's limits: the gate may open fully (once per worker)."""
        if not self._paced:
            self._paced = True
            self.actor.paced.remote()


class _RemoteSlot:
    """One slot of the global gate, held with ``async with`` (``outcome`` set before it goes back)."""

    def __init__(self, gate: RemoteGate, request: int) -> None:
        self.gate, self.request = gate, request
        self.started = 0.0
        self.outcome = "error"

    async def __aenter__(self) -> _RemoteSlot:
        gate = self.gate
        try:
            granted = await gate.actor.acquire_slot.remote(gate.owner, self.request)
        except asyncio.CancelledError:  # the run halted while this waited: the actor must not keep it
            gate.actor.abandon.remote(gate.owner, self.request)
            raise
        except Exception as exc:  # noqa: BLE001 - the pace's actor is gone: no call may go without it
            raise _stuck(gate.stuck, exc) from exc
        if granted is None:
            raise _stuck(gate.stuck, f"no slot of the global concurrency gate came free in {gate.patience:g} s "
                                     "(calls in flight never ended)")
        gate.in_flight += 1
        gate.max_seen = max(gate.max_seen, gate.in_flight)
        self.started = asyncio.get_running_loop().time()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.gate.in_flight -= 1  # the release goes without waiting for its reply: one round trip less
        self.gate.actor.release_slot.remote(self.gate.owner, self.request, self.outcome)


class RemoteWindow:
    """A worker's view of the global rate-limit window (``local``: its limits as this worker knows
    them, the policy's and those the provider's replies said; what it learns goes to the actor)."""

    def __init__(self, actor: Any, owner: str, policy: ExecutionPolicy, stuck: Callable[[str], None]) -> None:
        self.actor, self.owner, self.stuck = actor, owner, stuck
        self.local = SlidingWindowLimiter(policy.rate)

    @property
    def rpm(self) -> int | None:
        return self.local.rpm

    @property
    def tpm(self) -> int | None:
        return self.local.tpm

    @property
    def limits(self) -> dict[str, Any]:
        return self.local.limits

    def check(self, tokens: int) -> None:
        self.local.check(tokens)

    def learn(self, rpm: int | None, tpm: int | None, reset: float | None = None, processing: float | None = None,
              received: float | None = None) -> None:
        """The limits a reply said, to the global pace (a window is not learned across processes:
        a worker's clock is not the pace's)."""
        self.local.learn(rpm, tpm)
        self.actor.learn.remote(rpm, tpm)

    def throttled(self) -> None:
        self.actor.throttled.remote()

    async def acquire(self, tokens: int) -> Admission:
        try:
            admitted = await self.actor.acquire_tokens.remote(self.owner, tokens)
        except Exception as exc:  # noqa: BLE001 - as for a slot
            raise _stuck(self.stuck, exc) from exc
        if admitted is None:
            raise _stuck(self.stuck, "the global rate-limit window refused a worker it had seen die")
        return admitted


def _stuck(report: Callable[[str], None], why: str | BaseException) -> GateStuck:
    """The worker's pace failed (``why``): reported to the worker (which stops), as an exception."""
    if isinstance(why, BaseException):
        why = f"the global pace (a Ray actor) stopped answering: {type(why).__name__}"
    reason = f"{why}: stopping; unfinished documents stay pending"
    report(reason)
    return GateStuck(reason)
