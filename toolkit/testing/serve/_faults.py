"""Faults the server injects: by rate (a profile's ``faults`` and the server's own options) and by
schedule (``the next N calls answer X``, queued by a test through ``POST /_admin/faults``).

A fault replaces the answer of an admitted call (its tokens stay charged, as a provider counts a
failed request against the limits). The kinds: everything :class:`toolkit.core._faults.Faults` names
(``rate_limit`` a 429 without ``retry-after``, ``rate_limit_retry_after`` one with it,
``server_error`` 500, ``timeout`` a call held for ``seconds`` then answered 504, ``malformed``,
``truncated``, ``missing_ids`` and ``extra_ids`` damage the reply's content, ``unauthorized`` 401,
``context_length`` 400) and three of HTTP's own: ``overloaded`` (503; Anthropic's 529),
``malformed_body`` (a 200 whose body is cut-off JSON) and ``drop`` (the connection closed without
a response).
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, fields

from toolkit.core import Faults

HTTP_FAULTS = ("overloaded", "malformed_body", "drop")
KINDS = tuple(f.name for f in fields(Faults)) + HTTP_FAULTS
ALIASES = {"429": "rate_limit", "500": "server_error", "503": "overloaded", "529": "overloaded", "401": "unauthorized"}
CONTENT_FAULTS = ("malformed", "truncated", "missing_ids", "extra_ids")  # answered 200, the reply damaged


def fault_kind(name: str) -> str:
    """The kind ``name`` (or its status-code alias) names; ValueError for an unknown one."""
    kind = ALIASES.get(name, name)
    if kind not in KINDS:
        raise ValueError(f"unknown fault {name!r}; known: {', '.join(KINDS)} (or {', '.join(ALIASES)})")
    return kind


@dataclass(frozen=True)
class Fault:
    """One injected fault; ``seconds``: how long a ``timeout`` holds the call, or the
    ``retry-after`` of a ``rate_limit_retry_after`` (None: the server's default)."""

    kind: str
    seconds: float | None = None


class FaultPlan:
    """Rates per kind (they add up to at most 1) and a queue of scheduled faults, served first."""

    def __init__(self, rates: dict[str, float] | None = None, seed: int = 0) -> None:
        self.rates = {fault_kind(k): float(v) for k, v in (rates or {}).items() if v}
        if any(v < 0 for v in self.rates.values()) or sum(self.rates.values()) > 1.0 + 1e-9:
            raise ValueError("fault rates must be non-negative and add up to at most 1")
        self._rng = random.Random(seed)
        self._queue: deque[Fault] = deque()

    def schedule(self, kind: str, count: int = 1, seconds: float | None = None) -> None:
        """The next ``count`` admitted calls answer ``kind`` (after those already queued)."""
        if count < 1:
            raise ValueError("count must be at least 1")
        self._queue.extend([Fault(fault_kind(kind), seconds)] * count)

    def queued(self) -> list[Fault]:
        return list(self._queue)

    def clear(self) -> None:
        self._queue.clear()

    def next(self) -> Fault | None:
        """The fault of the next admitted call: a queued one, else a draw by rate (None: none)."""
        if self._queue:
            return self._queue.popleft()
        u = self._rng.random()
        for kind, rate in self.rates.items():
            if u < rate:
                return Fault(kind)
            u -= rate
        return None
