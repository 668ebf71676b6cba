"""Providers DSPy/LiteLLM reaches by name (``openai/gpt-4o-mini``, ``anthropic/...``), and
OpenAI-compatible servers (``openai/NAME`` with ``api_base``: ``llama_cpp.server``, vLLM, ...)."""

from __future__ import annotations

import os
from typing import Any

from toolkit.lm.backend import Capabilities, ResolvedLM
from toolkit.lm.prefixcache import ANTHROPIC, OPENAI, CacheRules

PLACEHOLDER_KEY = "no-key"  # the key sent to an OpenAI-compatible server when the environment has none


def resolve(spec: str, rest: str, *, api_base: str | None = None, prompt_cache: bool = True,
            **_: Any) -> ResolvedLM:
    """``spec`` is ``provider/model``; keys come from the environment and are never stored. With
    ``prompt_cache``, Anthropic models are sent ``cache_control`` on the prompt's stable beginning
    (:func:`prompt_cache_config`); OpenAI caches by itself. Both caches' rules go in the capabilities."""
    import dspy

    kwargs: dict[str, Any] = {"cache": False, "num_retries": 0}
    marks = prompt_cache_config(spec) if prompt_cache else None
    if marks is not None:
        kwargs["prompt_cache"] = marks
    rules = None if api_base else cache_rules(spec)  # a compatible server's cache is its own
    capabilities = Capabilities(tokenizer=spec.split("/", 1)[1], prompt_cache=rules is not None,
                                cache=rules if prompt_cache else None,
                                batch_api=spec.startswith("openai/"))  # OpenAI's, or a compatible server's
    if not api_base:
        return ResolvedLM(spec, dspy.LM(spec, **kwargs), spec, capabilities, priced_as=spec)
    if not spec.startswith("openai/"):
        return ResolvedLM(spec, dspy.LM(spec, api_base=api_base, **kwargs), spec, capabilities,
                          priced_as=spec)
    from toolkit.lm.engine import AsyncCompatibleServerEngine, CompatibleServerEngine

    key = {} if os.environ.get("OPENAI_API_KEY") else {"api_key": PLACEHOLDER_KEY}  # a real key stays in the env
    engine = CompatibleServerEngine(dspy.LM(spec, api_base=api_base, **key, **kwargs))
    lm = dspy.LM(spec, engine=engine, async_engine=AsyncCompatibleServerEngine(engine), **kwargs)
    return ResolvedLM(spec, lm, spec, capabilities, engine, priced_as=spec)


def cache_rules(spec: str) -> CacheRules | None:
    """The prompt-cache rules of a provider model, where known (see :mod:`toolkit.lm.prefixcache`)."""
    return {"openai": OPENAI, "anthropic": ANTHROPIC}.get(spec.split("/", 1)[0])


def prompt_cache_config(spec: str) -> Any:
    """DSPy's (lm15) prompt-cache setting for ``spec``: Anthropic caches only a marked prefix, so
    the system message (instructions and entity types, first and byte-identical in every call) is
    marked; None for providers that cache by themselves."""
    if not spec.startswith("anthropic/"):
        return None
    from dspy.lm15 import CacheConfig

    return CacheConfig(mode="auto", prefix="stable")
