"""Money as well as hours: what each predicted setting costs, in each execution mode, and the picks
under a deadline or a budget.

A setting (documents per call ``n``, a prompt of ``prompt`` tokens of which ``shared`` are the part
every call repeats: instructions, types, worked examples) costs per document
``(prompt x input price + n x output x output price) / n`` in **sync** mode. In **cache** mode the
shared prefix is read from the provider's prompt cache when it is long enough to be cached (a
provider's minimum, rounded down to its increments), at the cache-read price, and its latency is
saved; where the profile says cached tokens do not count towards the tokens-per-minute limit, the
limit binds later. In **batch-api** mode every token costs the batch price and the corpus is done
within the provider's batch window (24 hours unless said otherwise): a deadline shorter than that
rules it out whatever its throughput.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from toolkit.core import Prices
from toolkit.lm import CacheRules

MODES = ("sync", "cache", "batch-api")
BATCH_WINDOW_HOURS = 24.0


def parse_hours(text: str | float | None) -> float | None:
    """``8h``, ``90m``, ``2d``, ``3600s`` or a number of hours, in hours."""
    if text is None or isinstance(text, (int, float)):
        return None if text is None else float(text)
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", str(text).lower())
    if not match:
        raise ValueError(f"a deadline is a number with s, m, h or d (8h, 90m, 2d): {text!r}")
    value, unit = float(match.group(1)), match.group(2) or "h"
    return value * {"s": 1 / 3600, "m": 1 / 60, "h": 1.0, "d": 24.0}[unit]


def cost_per_document(prices: Prices, mode: str, n: int, prompt: float, output: float, cached: float) -> float:
    """USD per document of one call of ``n`` documents (``prompt`` and ``output`` tokens per call,
    ``cached`` of the prompt served from the cache)."""
    if mode == "batch-api":
        return prices.cost(round(prompt), round(output), batch=True) / n
    return prices.cost(round(prompt), round(output), round(cached) if mode == "cache" else 0) / n


def modes_for(prices: Prices | None, cache: CacheRules | None, asked: Sequence[str] | None = None) -> list[str]:
    """The modes a backend offers: sync always; cache with a prompt cache; batch-api with batch prices."""
    offered = ["sync"]
    if cache is not None:
        offered.append("cache")
    if prices is not None and prices.batch_input is not None and prices.batch_output is not None:
        offered.append("batch-api")
    if asked is None:
        return offered
    unknown = set(asked) - set(MODES)
    if unknown:
        raise ValueError(f"unknown modes {sorted(unknown)}; modes: {', '.join(MODES)}")
    return [m for m in offered if m in asked]


def price_rows(rows: list[dict[str, Any]], documents: int, prices: Prices | None) -> None:
    """Add ``hours`` for ``documents`` and, when priced, ``cost_per_1k_docs`` and ``cost_usd`` (in place)."""
    for r in rows:
        r["hours"] = (BATCH_WINDOW_HOURS if r["mode"] == "batch-api"
                      else documents / r["docs_per_min"] / 60 if r["docs_per_min"] else None)
        per_doc = (cost_per_document(prices, r["mode"], r["docs_per_call"], r["prompt_tokens"], r["output_tokens"],
                                     r["cached_tokens"]) if prices else None)
        r["cost_per_1k_docs"] = None if per_doc is None else 1000 * per_doc
        r["cost_usd"] = None if per_doc is None else documents * per_doc


def picks(rows: list[dict[str, Any]], deadline_hours: float | None, budget_usd: float | None) -> dict[str, Any]:
    """Among allowed rows: the cheapest that meets the deadline and the fastest within the budget
    (None when no row does, or when costs are unknown)."""
    allowed = [r for r in rows if r["allowed"] and r["hours"] is not None]
    priced = [r for r in allowed if r["cost_usd"] is not None]
    in_time = [r for r in priced if deadline_hours is None or r["hours"] <= deadline_hours]
    in_budget = [r for r in allowed
                 if budget_usd is None or (r["cost_usd"] is not None and r["cost_usd"] <= budget_usd)]
    return {
        "deadline_hours": deadline_hours, "budget_usd": budget_usd,
        "cheapest_within_deadline": min(in_time, key=lambda r: (r["cost_usd"], r["hours"])) if in_time else None,
        "fastest_within_budget": min(in_budget, key=lambda r: (r["hours"], r["cost_usd"] or 0)) if in_budget else None,
    }


def describe(pick: dict[str, Any] | None) -> str:
    if pick is None:
        return "none"
    cost = ("unpriced" if pick["cost_usd"] is None
            else f"${pick['cost_usd']:,.2f} (${pick['cost_per_1k_docs']:.3f}/1k docs)")
    hours = pick["hours"]
    took = f"{hours:.1f} h" if hours >= 1 else f"{60 * hours:.1f} min"
    return (f"mode={pick['mode']}, max_docs={pick['max_docs']}, budget={pick['budget']}, "
            f"concurrency={pick['concurrency']}: {took}, {cost}")
