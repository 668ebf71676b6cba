"""What ``bench`` measures: its configurations as data, run in this order, and the ratios it reports.

A configuration is documents per call (one, or the bench's ``max_docs``), calls in flight (one, or
the bench's concurrency) and the state of the provider's prompt cache. A new configuration (a
provider's batch API, say) is one more entry in :data:`BENCH_PLAN` and, when it runs in another
way, a runner for its name in ``toolkit.measure._bench.bench``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from toolkit.jobs import limit_bound
from toolkit.lm import Capabilities
from toolkit.measure._results import ConfigFigures

Cache = Literal["cold", "warm", "provider"]


@dataclass(frozen=True)
class BenchConfig:
    """``cache``: ``cold`` bypasses the provider's cache; ``warm`` turns it on and warms it with a
    call outside the measurement; ``provider``: as a production run gets it (on where the backend
    knows its provider's cache rules, e.g. the emulated hosted profiles; off for the local model,
    as before). ``needs``: ``prompt_cache`` (only on a backend with one), ``concurrency`` (only
    on a backend that runs calls concurrently) or ``batch_api`` (a backend with a batch API)."""

    name: str
    packed: bool
    concurrent: bool
    cache: Cache
    needs: str | None = None
    label: str = ""
    mode: str = "sync"  # or "batch-api": through the provider's batch API

    def available(self, caps: Capabilities) -> bool:
        if self.needs == "prompt_cache":
            return caps.prompt_cache
        if self.needs == "concurrency":
            return caps.concurrency != "1"
        if self.needs == "batch_api":
            return caps.batch_api
        return True

    def settings(self, max_docs: int, concurrency: str) -> tuple[int, str]:
        """(documents per call, concurrency) of this configuration in a bench of ``max_docs`` per
        call and ``concurrency``."""
        return (max_docs if self.packed else 1), (concurrency if self.concurrent else "1")

    def cache_on(self, caps: Capabilities) -> bool:
        """Whether the provider's prompt cache is on in this configuration."""
        return self.cache == "warm" or (self.cache == "provider" and caps.cache is not None)


BENCH_PLAN: tuple[BenchConfig, ...] = (
    BenchConfig("A", packed=False, concurrent=False, cache="cold", label="one document per call, one at a time"),
    BenchConfig("A_warm", packed=False, concurrent=False, cache="warm", needs="prompt_cache",
                label="A with the prompt cache warm"),
    BenchConfig("B", packed=True, concurrent=False, cache="provider", label="packed, one call at a time"),
    BenchConfig("C", packed=True, concurrent=True, cache="provider", label="packed, concurrent"),
    BenchConfig("D", packed=False, concurrent=True, cache="provider", needs="concurrency",
                label="one document per call, concurrent (what GraphRAG, LightRAG and LangExtract run)"),
    BenchConfig("batch_api", packed=True, concurrent=False, cache="provider", needs="batch_api", mode="batch-api",
                label="packed, through the provider's batch API (results within its window, at its prices)"),
)

SPEEDUPS = (("b", "a"), ("c", "a"), ("d", "a"), ("c", "d"), ("a_warm", "a"), ("b", "a_warm"))


def plan_for(caps: Capabilities, plan: Sequence[BenchConfig] = BENCH_PLAN) -> list[BenchConfig]:
    """The configurations of ``plan`` that ``caps`` can run, in order."""
    return [c for c in plan if c.available(caps)]


def speedups(seconds: dict[str, float]) -> dict[str, float | None]:
    """``speedup_X_vs_Y`` (Y's seconds over X's) for the pairs of :data:`SPEEDUPS`; None where
    one of them did not run (or took no time)."""
    by_key = {name.lower(): s for name, s in seconds.items()}
    return {f"speedup_{x}_vs_{y}": by_key[y] / by_key[x] if by_key.get(x) and y in by_key else None
            for x, y in SPEEDUPS}


def rate_limit_bound(caps: Capabilities, config: ConfigFigures) -> dict[str, float | None]:
    """The documents per minute the client-side limits allow ``config`` (its documents per call
    and its tokens charged per document), what it reached, and the share."""
    rate = caps.rate
    limits = config.rate_limits or {"rpm": rate.requests_per_minute, "tpm": rate.tokens_per_minute,
                                    "window": rate.window}
    per_call = config.documents / config.batches if config.batches else 1.0
    per_doc = (config.budget_tokens_ok or 0) / config.extracted if config.extracted else None
    return limit_bound(dict(limits), per_call, per_doc, config.extracted, config.seconds)
