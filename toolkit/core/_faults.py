"""Fault injection as data: the probability per call of each fault a provider can throw at a run
(used by the chaos run's fake provider and by emulated profiles)."""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, fields

TRANSIENT = ("rate_limit", "rate_limit_retry_after", "server_error", "timeout", "malformed", "truncated",
             "missing_ids", "extra_ids")


@dataclass(frozen=True)
class Faults:
    """Probability per call of each fault (they are exclusive; the rest of the time, a good reply)."""

    rate_limit: float = 0.0  # 429 without Retry-After
    rate_limit_retry_after: float = 0.0  # 429 with Retry-After
    server_error: float = 0.0  # 500
    timeout: float = 0.0  # no answer within the call timeout
    malformed: float = 0.0  # unparseable JSON
    truncated: float = 0.0  # reply cut off
    missing_ids: float = 0.0  # reply leaves some documents out
    extra_ids: float = 0.0  # reply adds ids that were not asked for
    unauthorized: float = 0.0  # 401
    context_length: float = 0.0  # context window exceeded

    def __post_init__(self) -> None:
        if sum(asdict(self).values()) > 1.0 + 1e-9:
            raise ValueError("fault probabilities add up to more than 1")

    def pick(self, rng: random.Random) -> str | None:
        """One draw: the name of the fault for this call, or None for a good reply."""
        u = rng.random()
        for name, p in asdict(self).items():
            if u < p:
                return name
            u -= p
        return None

    @classmethod
    def transient(cls, rate: float) -> Faults:
        """``rate`` spread evenly over the transient faults (those a retry can cure)."""
        return cls(**{name: rate / len(TRANSIENT) for name in TRANSIENT})

    @classmethod
    def only(cls, name: str, rate: float = 1.0) -> Faults:
        aliases = {"401": "unauthorized", "429": "rate_limit_retry_after", "500": "server_error"}
        name = aliases.get(name, name)
        if name not in {f.name for f in fields(cls)}:
            raise ValueError(f"unknown fault {name!r}")
        return cls(**{name: rate})
