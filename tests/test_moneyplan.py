"""Planning money: cost per setting and mode, and the picks under a deadline or a budget."""

from __future__ import annotations

from pathlib import Path

import pytest

from toolkit.core._pricing import prices_for
from toolkit.lm import CacheRules
from toolkit.plan._money import cost_per_document, parse_hours


def test_a_prefix_is_cached_from_the_minimum_in_increments() -> None:
    rules = CacheRules(min_tokens=1024, increment=128)
    assert [rules.cacheable(n) for n in (0, 1023, 1024, 1151, 1152, 2000)] == [0, 0, 1024, 1024, 1152, 1920]


@pytest.mark.parametrize(("text", "hours"), [("8h", 8.0), ("90m", 1.5), ("2d", 48.0), ("3600s", 1.0), ("5", 5.0)])
def test_deadlines_read_in_hours(text: str, hours: float) -> None:
    assert parse_hours(text) == pytest.approx(hours)


def test_a_deadline_without_a_unit_it_knows_is_refused() -> None:
    with pytest.raises(ValueError, match="deadline"):
        parse_hours("eight hours")


def test_the_cost_per_document_is_the_price_map_times_the_tokens_of_a_call() -> None:
    prices = prices_for("gpt-4o-mini")
    assert prices is not None
    # 10 documents per call: 5,000 prompt tokens (1,152 of them cached in cache mode), 600 output tokens
    sync = (5000 * 0.15 + 600 * 0.60) / 1e6 / 10
    cache = ((5000 - 1152) * 0.15 + 1152 * 0.075 + 600 * 0.60) / 1e6 / 10
    batch = (5000 * 0.075 + 600 * 0.30) / 1e6 / 10
    assert cost_per_document(prices, "sync", 10, 5000, 600, 1152) == pytest.approx(sync)
    assert cost_per_document(prices, "cache", 10, 5000, 600, 1152) == pytest.approx(cache)
    assert cost_per_document(prices, "batch-api", 10, 5000, 600, 1152) == pytest.approx(batch)


def test_the_plan_picks_the_cheapest_setting_in_time_and_the_fastest_within_budget(ncbi_devel: Path) -> None:
    from toolkit.plan import plan

    tight = plan("hosted-api", str(ncbi_devel), documents=100_000, deadline="8h", budget_usd=60)
    money = tight.money
    assert money["prices"]["model"] == "gpt-4o-mini" and "batch-api" in money["modes"]
    cheapest, fastest = money["cheapest_within_deadline"], money["fastest_within_budget"]
    in_time = [r for r in tight.grid if r["hours"] <= 8]
    assert cheapest["mode"] != "batch-api" and cheapest["cost_usd"] == min(r["cost_usd"] for r in in_time)
    assert fastest["cost_usd"] <= 60 and fastest["hours"] == min(r["hours"] for r in tight.grid if r["cost_usd"] <= 60)
    relaxed = plan("hosted-api", str(ncbi_devel), documents=100_000, deadline="2d").money
    batch = relaxed["cheapest_within_deadline"]
    assert batch["mode"] == "batch-api" and batch["hours"] == 24
    assert batch["cost_usd"] < 0.55 * cheapest["cost_usd"]  # half price, and the biggest batches
    broke = plan("hosted-api", str(ncbi_devel), documents=100_000, budget_usd=0.01).money
    assert broke["fastest_within_budget"] is None


def test_an_unpriced_model_plans_hours_but_no_money(ncbi_devel: Path) -> None:
    from toolkit.lm import _weights as weights
    from toolkit.plan import plan

    if weights.cached_path() is None:
        pytest.skip("default model not cached: run `python -m toolkit models fetch`")
    money = plan("local-cpu", str(ncbi_devel), deadline="8h", concurrency=(1,)).money
    assert money["prices"] is None and money["modes"] == ["sync"]
    assert money["cheapest_within_deadline"] is None and money["fastest_within_budget"] is not None
