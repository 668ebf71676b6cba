"""Execution policies as small frozen objects (the spirit of tenacity): what to retry, how long to
wait, when to split, how fast to go. They hold no state; the executor's runtime objects do.

Worst-case cost. A packed batch of ``n`` documents never costs more than
``SplitPolicy.max_calls_per_document * n`` calls, all retries and splits included: with the default
3, a batch of 8 documents that fails every time costs at most 24 calls, then its unfinished documents
are marked failed with their last error.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from typing import Literal


@dataclass(frozen=True)
class RetryPolicy:
    """``max_attempts`` calls per (sub-)batch before it is split; waits ``delays`` between them
    (the last one repeats), each multiplied by a random factor in ``[1, 1 + jitter]``, capped. A 429
    is the account's state, not the batch's fault: the first ``free_throttles`` of a batch neither
    count as attempts (no split follows them) nor spend its call budget (a rejected call is not
    billed); after that they count like any error, so a limit that never lifts still ends."""

    max_attempts: int = 4
    delays: tuple[float, ...] = (2.0, 4.0, 8.0)
    jitter: float = 0.25
    max_delay: float = 60.0
    free_throttles: int = 30  # 429s per batch that count neither as attempts nor against its call budget

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if not self.delays or min(self.delays) < 0 or self.jitter < 0:
            raise ValueError("delays must be non-empty and >= 0, jitter >= 0")

    def delay(self, retry: int, rng: random.Random) -> float:
        """Wait before retry number ``retry`` (1 = the first retry)."""
        base = self.delays[min(retry, len(self.delays)) - 1]
        return min(self.max_delay, base * (1.0 + rng.uniform(0.0, self.jitter)))

    def retry_after(self, seconds: float) -> float:
        """Wait asked by a provider's ``Retry-After``: honoured as given, capped at ``max_delay``."""
        return min(self.max_delay, max(0.0, seconds))


@dataclass(frozen=True)
class SplitPolicy:
    """After its last attempt a multi-document batch is split in halves, recursively; the whole tree
    of one packed batch is bounded by ``max_calls_per_document`` x its documents."""

    max_calls_per_document: int = 3

    def __post_init__(self) -> None:
        if self.max_calls_per_document < 1:
            raise ValueError("max_calls_per_document must be >= 1")

    def budget(self, documents: int) -> int:
        return self.max_calls_per_document * documents


@dataclass(frozen=True)
class RateLimitPolicy:
    """Requests and tokens per sliding ``window`` seconds (``None``: no limit). Tokens are the
    batch's budget tokens: prompt, documents and reserved output.

    A provider across a network needs two more things. ``guard``: seconds a call stays in the
    client's window beyond ``window`` (a call reaches the server a little after the client let it
    through, and a later call a little sooner: without it, the server's window sees both).
    ``smooth``: calls are also spaced at ``1 - headroom`` of the limits' rate, one call's worth
    ahead at most, because a provider may enforce its per-minute limits over shorter windows
    (OpenAI quantizes them); a 429 despite both widens the headroom a little, up to ``max_headroom``.
    ``source``: where the limits come from (``said``: the user; ``profile``: an emulated profile;
    learned limits from a provider's headers are adopted at run time, see the limiter)."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    window: float = 60.0
    guard: float = 0.0
    smooth: bool = False
    headroom: float = 0.01
    max_headroom: float = 0.10
    source: str = "none"

    def __post_init__(self) -> None:
        for value in (self.requests_per_minute, self.tokens_per_minute):
            if value is not None and value < 1:
                raise ValueError("rate limits must be >= 1 (or None)")
        if self.window <= 0 or self.guard < 0 or not 0 <= self.headroom <= self.max_headroom < 1:
            raise ValueError("need window > 0, guard >= 0 and 0 <= headroom <= max_headroom < 1")

    @classmethod
    def said(cls, rpm: int | None, tpm: int | None, window: float = 60.0) -> RateLimitPolicy:
        """An account's limits as its user states them, for a provider across a network."""
        return cls(rpm, tpm, window, guard=network_guard(window), smooth=True,
                   source="said" if rpm or tpm else "none")

    @property
    def limited(self) -> bool:
        return self.requests_per_minute is not None or self.tokens_per_minute is not None


def network_guard(window: float) -> float:
    """The margin a call stays in a client's window for a provider across a network (0.5% of it,
    at least 50 ms: 0.3 s of a minute): more than the jitter of a call's way to the server on a
    loaded machine (tens of milliseconds here)."""
    return max(0.05, 0.005 * window)


@dataclass(frozen=True)
class ConcurrencyPolicy:
    """``fixed``: ``max`` calls in flight. ``adaptive``: start at ``initial`` and, after each
    window of as many successes as the limit, double it (slow start, until the first 429) or add
    one (additive increase, after it); multiply by ``decrease`` on 429 or overload
    (multiplicative decrease). Never above ``max``. Either way the first call of a run goes
    alone, so a fatal error (401) costs one call."""

    mode: Literal["fixed", "adaptive"] = "fixed"
    max: int = 4
    initial: int = 1
    minimum: int = 1
    decrease: float = 0.5

    def __post_init__(self) -> None:
        if self.mode not in ("fixed", "adaptive"):
            raise ValueError(f"mode must be 'fixed' or 'adaptive', got {self.mode!r}")
        if not 1 <= self.minimum <= self.max or not 1 <= self.initial <= self.max:
            raise ValueError("need 1 <= minimum, initial <= max")
        if not 0 < self.decrease < 1:
            raise ValueError("decrease must be in (0, 1)")

    @classmethod
    def parse(cls, text: str) -> ConcurrencyPolicy:
        """``"4"`` (fixed) or ``"auto"`` / ``"auto:16"`` (adaptive up to 16)."""
        if text.startswith("auto"):
            _, _, top = text.partition(":")
            return cls(mode="adaptive", max=int(top or 16))
        return cls(mode="fixed", max=int(text))


@dataclass(frozen=True)
class BreakerPolicy:
    """Opens after ``threshold`` consecutive provider failures (timeouts, connection errors, 5xx),
    pauses ``cooldown`` seconds (doubling each trip), then probes with one call. After
    ``max_trips`` trips without a success in between, the run stops; unfinished documents stay
    pending."""

    threshold: int = 10
    cooldown: float = 30.0
    max_trips: int = 3


@dataclass(frozen=True)
class ExecutionPolicy:
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    split: SplitPolicy = field(default_factory=SplitPolicy)
    rate: RateLimitPolicy = field(default_factory=RateLimitPolicy)
    concurrency: ConcurrencyPolicy = field(default_factory=ConcurrencyPolicy)
    breaker: BreakerPolicy = field(default_factory=BreakerPolicy)
    call_timeout: float | None = None
    seed: int | None = None  # jitter seed, for reproducible runs

    def faster(self, factor: float) -> ExecutionPolicy:
        """This policy for a clock ``factor`` times faster (a scaled emulated provider): backoff,
        its cap, the breaker's cooldown and the call timeout divided by ``factor`` (the rate
        limits' window is the backend's own)."""
        if factor == 1.0:
            return self
        retry, breaker = self.retry, self.breaker
        return replace(self, retry=replace(retry, delays=tuple(d / factor for d in retry.delays),
                                           max_delay=retry.max_delay / factor),
                       breaker=replace(breaker, cooldown=breaker.cooldown / factor),
                       call_timeout=self.call_timeout / factor if self.call_timeout else None)
