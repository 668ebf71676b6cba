"""Cached prompt tokens read from a reply's usage, whatever a provider (or a damaged batch line)
put there (issue 24, item 5): what is not a count of tokens is 0, never an exception."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, strategies as st

from toolkit.lm import cached_tokens


@pytest.mark.parametrize(("usage", "expected"), [
    ({"prompt_tokens_details": {"cached_tokens": 12}}, 12),
    ({"prompt_tokens_details": {"cached_tokens": 0}, "cache_read_input_tokens": 7}, 7),  # Anthropic's
    ({"cache_read_input_tokens": 30}, 30),
    ({"prompt_tokens_details": SimpleNamespace(cached_tokens=5)}, 5),  # LiteLLM's details object
    ({"prompt_tokens_details": 3.0}, 0),
    ({"prompt_tokens_details": "cached_tokens: 9"}, 0),
    ({"prompt_tokens_details": [{"cached_tokens": 9}]}, 0),
    ({"prompt_tokens_details": None, "cache_read_input_tokens": "4"}, 0),
    ({"prompt_tokens_details": {"cached_tokens": "12"}}, 0),
    ({"prompt_tokens_details": {"cached_tokens": -3}}, 0),
    ({"prompt_tokens_details": {"cached_tokens": True}}, 0),
    ({"prompt_tokens_details": {"cached_tokens": float("nan")}}, 0),
    ({"prompt_tokens_details": {"cached_tokens": float("inf")}}, 0),
    ({"prompt_tokens_details": {"cached_tokens": 8.0}}, 8),
    ({"prompt_tokens_details": {"cached_tokens": {"n": 1}}}, 0),
    (None, 0), ("usage", 0), ([1, 2], 0),
])
def test_cached_tokens_are_a_count_or_zero(usage: Any, expected: int) -> None:
    assert cached_tokens(usage) == expected


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                    max_leaves=8)


@given(st.dictionaries(st.sampled_from(["prompt_tokens_details", "cache_read_input_tokens", "prompt_tokens"]),
                       JSON | st.dictionaries(st.just("cached_tokens"), JSON, max_size=1)))
def test_any_usage_gives_a_count_without_raising(usage: dict[str, Any]) -> None:
    found = cached_tokens(usage)
    assert isinstance(found, int) and found >= 0
