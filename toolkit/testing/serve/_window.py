"""The server's own rate limits: sliding windows of requests and tokens, charged at admission.

A call is admitted when, over the last ``window`` seconds, every limit still has room for it:
requests, tokens (input plus output), and where a provider splits them input and output tokens.
A provider charges a call's prompt tokens plus its ``max_tokens`` at admission (OpenAI does), so
the output charge is what the client reserved, not what the reply used. :meth:`Window.state` says,
per limit, what the ``x-ratelimit-*`` / ``anthropic-ratelimit-*`` headers say: the limit, what
remains, and the seconds until the window is fully replenished.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from toolkit.execution import format_duration

_EPS = 1e-9
DIMENSIONS = ("requests", "tokens", "input-tokens", "output-tokens")


@dataclass(frozen=True)
class Limits:
    """Per ``window`` seconds: ``rpm`` requests, ``tpm`` tokens (input plus output), ``itpm``
    input and ``otpm`` output tokens; None: no such limit."""

    rpm: int | None = None
    tpm: int | None = None
    itpm: int | None = None
    otpm: int | None = None
    window: float = 60.0

    def __post_init__(self) -> None:
        if self.window <= 0 or any(v is not None and v < 1 for v in self.by_dimension().values()):
            raise ValueError("rate limits must be positive (a window of seconds, limits of at least 1)")

    def by_dimension(self) -> dict[str, int | None]:
        return dict(zip(DIMENSIONS, (self.rpm, self.tpm, self.itpm, self.otpm), strict=True))


@dataclass(frozen=True)
class Limit:
    """One limit's state now: ``used`` in the window, ``remaining``, and ``reset``: seconds until
    the window is fully replenished (its last charge has left it)."""

    name: str
    limit: int
    used: int
    reset: float

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.used)


@dataclass(frozen=True)
class Verdict:
    """A call's admission: ``refused`` names the limit that had no room (None: admitted), ``wait``
    the seconds until it would have room (None: it never will, the call exceeds the limit alone),
    ``requested`` what the call asked of that limit."""

    refused: Limit | None = None
    wait: float | None = 0.0
    requested: int = 0

    @property
    def admitted(self) -> bool:
        return self.refused is None


class Window:
    """Sliding windows of :class:`Limits`, on the caller's clock (seconds, ``now`` given)."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._charges: deque[tuple[float, tuple[int, int, int, int]]] = deque()  # (time, amounts by dimension)
        self._used = [0, 0, 0, 0]

    def admit(self, input_tokens: int, output_tokens: int, now: float) -> Verdict:
        """Charge a call of ``input_tokens`` + ``output_tokens`` at ``now`` if every limit has room."""
        self._expire(now)
        amounts = (1, input_tokens + output_tokens, input_tokens, output_tokens)
        for i, limit in enumerate(self.limits.by_dimension().values()):
            if limit is not None and self._used[i] + amounts[i] > limit:
                return Verdict(self._limit(i, limit, now), self._wait(i, limit, amounts[i], now), amounts[i])
        self._charges.append((now, amounts))
        self._used = [u + a for u, a in zip(self._used, amounts, strict=True)]
        return Verdict()

    def state(self, now: float) -> dict[str, Limit]:
        """Every limit's state at ``now``, by dimension (``requests``, ``tokens``, ...)."""
        self._expire(now)
        return {name: self._limit(i, limit, now) for i, (name, limit) in enumerate(self.limits.by_dimension().items())
                if limit is not None}

    def clear(self) -> None:
        self._charges.clear()
        self._used = [0, 0, 0, 0]

    def _expire(self, now: float) -> None:
        while self._charges and now - self._charges[0][0] >= self.limits.window - _EPS:
            _, amounts = self._charges.popleft()
            self._used = [u - a for u, a in zip(self._used, amounts, strict=True)]

    def _limit(self, i: int, limit: int, now: float) -> Limit:
        """Limit ``i`` as the headers and messages say it: per minute of the caller's clock, as
        providers state their limits (a server at ``@10`` has windows of 6 s: 500 requests a window
        are 5,000 a minute, enforced over 6-second windows, as OpenAI quantizes its per-minute limits
        over shorter periods); ``reset`` in the caller's seconds."""
        last = next((t for t, amounts in reversed(self._charges) if amounts[i] > 0), None)
        reset = 0.0 if last is None else max(0.0, last + self.limits.window - now)
        scale = 60.0 / self.limits.window
        return Limit(DIMENSIONS[i], round(limit * scale), round(self._used[i] * scale), reset)

    def _wait(self, i: int, limit: int, amount: int, now: float) -> float | None:
        """Seconds until enough of dimension ``i`` has left the window for ``amount``."""
        if amount > limit:
            return None
        excess = self._used[i] + amount - limit
        for started, amounts in self._charges:  # oldest first
            excess -= amounts[i]
            if excess <= 0:
                return max(0.0, started + self.limits.window - now)
        return self.limits.window  # pragma: no cover - the charges add up to the usage


def duration(seconds: float) -> str:
    """``seconds`` as OpenAI writes a wait in its headers and messages, to the millisecond
    (``120ms``, ``1.5s``, ``6m0s``)."""
    return format_duration(round(max(0.0, seconds), 3))
