"""Runtime pacing objects of one run: rate limiter, concurrency gate, circuit breaker.

All read time from the running event loop (``loop.time()``) and wait with ``asyncio.sleep``, so they
follow a virtual clock when the loop has one (:mod:`toolkit.execution._vclock`).

The rate limiter is a **sliding window** (the count in any ``window`` seconds never exceeds the
limit), not a leaky bucket: a bucket that starts full admits up to twice its rate in the first
window, which is the 429 storm providers answer with. aiolimiter is a bucket, hence this module.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from toolkit.execution._errors import InvalidConfiguration
from toolkit.execution._policies import (
    BreakerPolicy,
    ConcurrencyPolicy,
    ExecutionPolicy,
    RateLimitPolicy,
    network_guard,
)

_EPS = 1e-9
MIN_LEARNED_WINDOW = 5.0  # seconds: a shorter reset says nothing of a provider's window (see learn)
# A provider's known window lets its whole allowance go at once; spread over a quarter of it instead,
# the calls reach the provider in the order and at about the time they were let through (let through
# together, each waits for the client to prepare the ones before it, and reaches the provider late
# enough that the client's window, emptying earlier, lets the next window's calls go too soon: 429s).
SPREAD = 4.0


def _now() -> float:
    return asyncio.get_running_loop().time()


class SlidingWindowLimiter:
    """Admits a call of ``tokens`` once both the request and the token count of the last
    ``window`` seconds (plus the policy's ``guard``) leave room for it and, with ``smooth``, once
    the calls before it are paced out at ``1 - headroom`` of the limits' rate (see
    :class:`~toolkit.execution._policies.RateLimitPolicy`). Waiters are served first come, first served.

    The limits are the policy's until a provider says its own (:meth:`learn`, from the headers of
    its replies): then the tighter of the two; :meth:`throttled` widens the headroom after a 429."""

    def __init__(self, policy: RateLimitPolicy) -> None:
        self.policy = policy
        self.rpm, self.tpm = policy.requests_per_minute, policy.tokens_per_minute
        self.window, self.guard, self.smooth = policy.window, policy.guard, policy.smooth
        self.headroom = policy.headroom
        self.source = policy.source
        self.learned: dict[str, int] = {}
        self.learned_window: float | None = None  # the provider's window, from its first reply (see learn)
        self._admitted: deque[tuple[float, int]] = deque()
        self._tokens_in_window = 0
        self._paced = [0.0, 0.0]  # loop time the paced requests and tokens are due (smooth)
        self._lock: asyncio.Lock | None = None

    @property
    def limits(self) -> dict[str, Any]:
        """The limits in force: ``{rpm, tpm, window, source}`` (None where there is none)."""
        return {"rpm": self.rpm, "tpm": self.tpm, "window": self.window if self.rpm or self.tpm else None,
                "source": self.source, **({"learned": dict(self.learned)} if self.learned else {})}

    def learn(self, rpm: int | None, tpm: int | None, reset: float | None = None, processing: float | None = None,
              received: float | None = None) -> None:
        """A provider said its limits per minute: pace by them where tighter than what was said (or
        where nothing was), calls spaced smoothly across a network. The first reply (its call went
        alone: the only one in the provider's window) also tells the window the provider counts
        over: its ``reset``, seconds until that window is empty again as the provider took the call
        in (``processing`` seconds before the reply was ``received``). A window of 5 to 60 seconds
        (the project's emulator at 10x: 6) is then kept as the provider keeps it, a sliding window of
        the per-minute limits scaled to it, its allowance free within a quarter of it at the start
        (:data:`SPREAD`); a shorter reset says nothing of a window (a provider that refills
        continuously, as OpenAI's resets read)."""
        said = self.policy
        changed, first = False, not self.learned
        for key, value in (("rpm", rpm), ("tpm", tpm)):
            if value is None or value < 1 or self.learned.get(key) == value:
                continue
            self.learned[key] = value
            changed = True
        if not changed:
            return
        if first and reset is not None and processing is not None and len(self._admitted) == 1 \
                and MIN_LEARNED_WINDOW <= reset <= 60.0:
            self.learned_window = reset  # said as the provider took the call in: its whole window ahead
            if received is not None:  # the probe is in the provider's window from when it took it in
                self._admitted[0] = (received - processing, self._admitted[0][1])
        window = self.learned_window or (said.window if said.limited else 60.0)
        self.window, self.guard = window, network_guard(window)
        self.smooth = True  # a known window: its allowance spread over a quarter of it (see SPREAD)
        for key, own in (("rpm", said.requests_per_minute), ("tpm", said.tokens_per_minute)):
            per_minute = [v for v in (self.learned.get(key), own and own * 60.0 / said.window) if v]
            if per_minute:
                setattr(self, key, max(1, int(min(per_minute) * window / 60.0)))
        self.source = "learned" if not said.limited else f"{said.source}+learned"

    def throttled(self) -> None:
        """A 429 although the pace kept to the limits: the provider counts more (or sooner) than
        the client thinks; pace a little slower (at most ``max_headroom`` below the limits)."""
        self.headroom = min(self.policy.max_headroom, self.headroom + 0.01)

    def check(self, tokens: int) -> None:
        """Refuse up front a call that could never be admitted."""
        tpm = self.tpm
        if tpm is not None and tokens > tpm:
            raise InvalidConfiguration(
                f"a batch of {tokens} budget tokens can never fit a limit of {tpm} tokens per "
                "window: lower the token budget or raise tokens_per_minute"
            )

    def _expire(self, now: float) -> None:
        life = self.window + self.guard
        while self._admitted and now - self._admitted[0][0] >= life - _EPS:
            self._tokens_in_window -= self._admitted.popleft()[1]

    def _wait_time(self, now: float, tokens: int) -> float:
        rpm, tpm, life = self.rpm, self.tpm, self.window + self.guard
        wait = 0.0
        if rpm is not None and len(self._admitted) >= rpm:
            wait = self._admitted[len(self._admitted) - rpm][0] + life - now
        if tpm is not None and self._tokens_in_window + tokens > tpm:
            excess = self._tokens_in_window + tokens - tpm
            for started, amount in self._admitted:  # oldest first: wait until enough has expired
                excess -= amount
                if excess <= 0:
                    wait = max(wait, started + life - now)
                    break
        if self.smooth:
            wait = max(wait, self._paced[0] - now, self._paced[1] - now)
        return max(0.0, wait)

    def try_acquire(self, tokens: int, now: float) -> float:
        """Admit now (returns 0) or return the seconds until there is room (admits nothing)."""
        self._expire(now)
        wait = self._wait_time(now, tokens)
        if wait <= 0:
            self._admitted.append((now, tokens))
            self._tokens_in_window += tokens
            if self.smooth:
                pace = SPREAD / self.window if self.learned_window else (1.0 - self.headroom) / self.window
                for i, (limit, amount) in enumerate(((self.rpm, 1), (self.tpm, tokens))):
                    if limit is not None:
                        self._paced[i] = max(self._paced[i], now) + amount / (limit * pace)
        return wait

    async def acquire(self, tokens: int) -> Admission:
        """Wait until admitted. A call charged more than the whole window allows (a document re-sent
        with a doubled output ceiling) waits for an empty window."""
        if self.rpm is None and self.tpm is None:  # kept all the same: limits learned later count it
            now = _now()
            self._expire(now)
            self._admitted.append((now, tokens))
            self._tokens_in_window += tokens
            return Admission(0.0, time.time())
        if self.tpm is not None:
            tokens = min(tokens, self.tpm)
        if self._lock is None:
            self._lock = asyncio.Lock()
        start = _now()
        async with self._lock:
            while (wait := self.try_acquire(tokens, _now())) > 0:
                await asyncio.sleep(wait + _EPS)
            return Admission(_now() - start, time.time())


class Admission(NamedTuple):
    """A call let through: the seconds it waited, and the wall-clock time it was let through
    (where the window is kept: comparable across the processes sharing it)."""

    waited: float
    at: float


class Slot:
    """A held slot of the gate: set ``outcome`` (``ok``, ``throttled`` or anything else) before it
    is released; ``started`` is the loop time it was granted."""

    def __init__(self, started: float) -> None:
        self.started = started
        self.outcome = "error"


class HeldSlot(Protocol):
    """A slot held for one call: ``started`` (loop time), ``outcome`` set before it goes back."""

    started: float
    outcome: str


class Gate(Protocol):
    """A run's concurrency gate: :class:`ConcurrencyGate`, or a scale-out run's view of the global one."""

    in_flight: int
    max_seen: int
    history: list[tuple[float, int]]

    def slot(self) -> AbstractAsyncContextManager[HeldSlot]: ...

    def pause_until(self, when: float) -> None: ...

    def half_open(self) -> None: ...

    def paced(self) -> None: ...


class Window(Protocol):
    """A run's rate-limit window: :class:`SlidingWindowLimiter`, or a scale-out run's view of the global one."""

    @property
    def rpm(self) -> int | None: ...

    @property
    def tpm(self) -> int | None: ...

    @property
    def limits(self) -> dict[str, Any]: ...

    def check(self, tokens: int) -> None: ...

    def learn(self, rpm: int | None, tpm: int | None, reset: float | None = None, processing: float | None = None,
              received: float | None = None) -> None: ...

    def throttled(self) -> None: ...

    async def acquire(self, tokens: int) -> Admission: ...


Pacing = Callable[[ExecutionPolicy], tuple[Gate, Window]]
"""A run's gate and window for its policy (default: its own; a scale-out run shares global ones)."""


class ConcurrencyGate:
    """Bounds calls in flight. Adaptive mode is AIMD with a slow start, as in TCP: after ``limit``
    successes the limit doubles until the first 429/overload, then grows by one; it is multiplied
    by ``decrease`` on 429/overload (once per round trip: only calls started after the last
    decrease can cause another). Until the first success of a run, one call at a time. A slot is
    held with ``async with gate.slot() as slot:``."""

    def __init__(self, policy: ConcurrencyPolicy) -> None:
        self.policy = policy
        self.limit = policy.initial if policy.mode == "adaptive" else policy.max
        self.in_flight = 0
        self.max_seen = 0
        self.history: list[tuple[float, int]] = [(0.0, self.limit)]  # (time, limit) at every change
        self._probed = False
        self._slow_start = True
        self._credit = 0
        self._last_decrease = float("-inf")
        self._resume_at = 0.0
        self._waiters: deque[asyncio.Future[None]] = deque()  # callers waiting for a slot, FIFO

    def _allowed(self) -> int:
        return self.limit if self._probed else 1

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[Slot]:
        """Hold a slot for one call; released with the outcome the body set."""
        held = Slot(await self.acquire())
        try:
            yield held
        finally:
            self.release(held.started, held.outcome)

    async def acquire(self) -> float:
        """Wait for a slot (and any global pause); returns the loop time the call starts.

        Waiters are served first come, first served, and a released slot wakes exactly one of
        them (it is handed over), so thousands of queued batches cost O(1) per call, not a
        wake-up of every waiter."""
        while True:
            pause = self._resume_at - _now()
            if pause > 0:
                await asyncio.sleep(pause)
                continue
            if self.in_flight < self._allowed() and not self._waiters:
                self._take()
                return _now()
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter  # on success the slot was handed over: in_flight already counts us
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self.in_flight -= 1
                    self._wake()
                elif waiter in self._waiters:
                    self._waiters.remove(waiter)
                raise
            if self._resume_at > _now():  # a pause began while we waited: give the slot back
                self.in_flight -= 1
                self._wake()
                continue
            return _now()

    def _take(self) -> None:
        self.in_flight += 1
        self.max_seen = max(self.max_seen, self.in_flight)

    def _wake(self) -> None:
        while self._waiters and self.in_flight < self._allowed():
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._take()
                waiter.set_result(None)

    def half_open(self) -> None:
        """Let only one call through until one succeeds (after a breaker trip)."""
        self._probed = False

    def paced(self) -> None:
        """The rate limiter knows the account's limits and spaces the calls itself: no need to find
        the concurrency from 1 upwards (a slow start costs a round trip per doubling); the limit
        goes to its maximum, and 429s or overloads still bring it down."""
        if self.policy.mode == "adaptive" and self._slow_start and self.limit < self.policy.max:
            self._slow_start = False
            self._set_limit(self.policy.max)
            self._wake()

    def pause_until(self, when: float) -> None:
        """No call starts before loop time ``when`` (a provider's Retry-After, a breaker cooldown)."""
        self._resume_at = max(self._resume_at, when)

    def release(self, started: float, outcome: str) -> None:
        """``outcome``: ``ok``, ``throttled`` (429/overload) or anything else (no change)."""
        self.in_flight -= 1
        if outcome == "ok":
            self._probed = True
            if self.policy.mode == "adaptive" and self.limit < self.policy.max:
                self._credit += 1
                if self._credit >= self.limit:
                    grown = 2 * self.limit if self._slow_start else self.limit + 1
                    self._set_limit(min(self.policy.max, grown))
        elif outcome == "throttled" and self.policy.mode == "adaptive" and started >= self._last_decrease:
            self._slow_start = False
            self._last_decrease = _now()
            self._set_limit(max(self.policy.minimum, int(self.limit * self.policy.decrease)))
        self._wake()

    def _set_limit(self, value: int) -> None:
        self._credit = 0
        if value != self.limit:
            self.limit = value
            self.history.append((_now(), value))


class ProviderDown(Exception):
    """The circuit breaker gave up: the provider failed through every cooldown."""


@dataclass
class CircuitBreaker:
    """Counts consecutive provider failures across batches. At ``threshold`` it opens: no call
    starts for a cooldown (doubling at each trip), then one probe call goes alone (half-open). A
    failed probe opens it again at once; a success closes it. One trip more than ``max_trips``
    stops the run. A call that started before the breaker last opened tells nothing new (the
    outage that opened it): its failure counts neither toward a trip nor as a failed probe, so a
    burst of calls in flight during one outage is one trip, not one trip each."""

    policy: BreakerPolicy
    consecutive: int = 0
    trips: int = 0
    total_trips: int = 0
    half_open: bool = False
    opened_at: float = float("-inf")  # loop time of the last trip

    def record(self, provider_fault: bool | None, gate: Gate, started: float | None = None) -> None:
        """``True`` for a provider failure, ``False`` for a success, ``None`` for neither (a 429 or a
        malformed reply says nothing about the provider being up or down). ``started``: the loop
        time the call started (None: now)."""
        if provider_fault is None:
            return
        if provider_fault is False:
            self.consecutive = self.trips = 0
            self.half_open = False
            return
        if started is not None and started < self.opened_at:
            return
        self.consecutive += 1
        if self.consecutive < self.policy.threshold and not self.half_open:
            return
        self.trips += 1
        self.total_trips += 1
        self.consecutive = 0
        if self.trips > self.policy.max_trips:
            raise ProviderDown(
                f"provider failed {self.policy.threshold} calls in a row and every probe after "
                f"{self.policy.max_trips} cooldowns: stopping; unfinished documents stay pending"
            )
        self.half_open = True
        self.opened_at = _now()
        gate.pause_until(self.opened_at + self.policy.cooldown * 2 ** (self.trips - 1))
        gate.half_open()
