"""Providers DSPy/LiteLLM reaches by name (``openai/gpt-4o-mini``, ``anthropic/...``), and
OpenAI-compatible servers (``openai/NAME`` with ``api_base``: ``llama_cpp.server``, vLLM, ...)."""

from __future__ import annotations

import os
from typing import Any

from toolkit.execution import RateFeed
from toolkit.lm._backend import Capabilities, ResolvedLM
from toolkit.lm._engine import (
    AsyncCompatibleServerEngine,
    AsyncNativeEngine,
    CompatibleServerEngine,
    NativeEngine,
    native_provider,
)
from toolkit.lm._prefixcache import ANTHROPIC, OPENAI, CacheRules
from toolkit.lm._replies import litellm_metadata

PLACEHOLDER_KEY = "no-key"  # the key sent to an OpenAI-compatible server when the environment has none
BATCH_APIS = ("openai/", "anthropic/")  # OpenAI's (or a compatible server's) batches, Anthropic's Message Batches


def resolve(spec: str, rest: str, *, api_base: str | None = None, prompt_cache: bool = True,
            **_: Any) -> ResolvedLM:
    """``spec`` is ``provider/model``; keys come from the environment and are never stored. With
    ``prompt_cache``, Anthropic models are sent ``cache_control`` on the prompt's stable beginning
    (:func:`prompt_cache_config`); OpenAI caches by itself. Both caches' rules go in the capabilities.
    The headers of every reply reach ``rates`` (see :mod:`toolkit.lm._replies`): through DSPy's own
    client with a transport that publishes them (OpenAI, Anthropic, compatible servers, ...), or,
    for the providers DSPy sends through LiteLLM, a LiteLLM callback."""
    import dspy

    kwargs: dict[str, Any] = {"cache": False, "num_retries": 0}
    marks = prompt_cache_config(spec) if prompt_cache else None
    if marks is not None:
        kwargs["prompt_cache"] = marks
    rules = None if api_base else cache_rules(spec)  # a compatible server's cache is its own
    capabilities = Capabilities(tokenizer=spec.split("/", 1)[1], prompt_cache=rules is not None,
                                cache=rules if prompt_cache else None,
                                batch_api=spec.startswith(BATCH_APIS))
    rates = RateFeed()
    where = {"api_base": api_base} if api_base else {}
    if native_provider(spec) is None or _gateway_in_environment(spec, api_base):  # DSPy's route: LiteLLM
        lm = dspy.LM(spec, **where, metadata=litellm_metadata(rates), **kwargs)
        return ResolvedLM(spec, lm, spec, capabilities, priced_as=spec, rates=rates)
    if api_base and spec.startswith("openai/"):
        key = None if os.environ.get("OPENAI_API_KEY") else PLACEHOLDER_KEY  # a real key stays in the env
        engine: NativeEngine = CompatibleServerEngine(spec, rates, api_base=api_base, api_key=key)
        lm = dspy.LM(spec, engine=engine, async_engine=AsyncCompatibleServerEngine(engine), **kwargs)
        return ResolvedLM(spec, lm, spec, capabilities, engine, priced_as=spec, rates=rates)
    engine = NativeEngine(spec, rates, api_base=api_base, twin=dspy.LM(spec, **where, **kwargs))
    lm = dspy.LM(spec, engine=engine, async_engine=AsyncNativeEngine(engine), **kwargs)
    return ResolvedLM(spec, lm, spec, capabilities, priced_as=spec, rates=rates)


def _gateway_in_environment(spec: str, api_base: str | None) -> bool:
    """DSPy sends a model through LiteLLM when the environment names a gateway for its provider
    (``OPENAI_API_BASE``, ``OPENAI_BASE_URL``, ...) and no ``api_base`` is given: so does this."""
    prefix = spec.split("/", 1)[0].upper()
    return not api_base and any(os.getenv(f"{prefix}_{name}") for name in ("API_BASE", "BASE_URL"))


def cache_rules(spec: str) -> CacheRules | None:
    """The prompt-cache rules of a provider model, where known (see :mod:`toolkit.lm._prefixcache`)."""
    return {"openai": OPENAI, "anthropic": ANTHROPIC}.get(spec.split("/", 1)[0])


def prompt_cache_config(spec: str) -> Any:
    """DSPy's (lm15) prompt-cache setting for ``spec``: Anthropic caches only a marked prefix, so
    the system message (instructions and entity types, first and byte-identical in every call) is
    marked; None for providers that cache by themselves."""
    if not spec.startswith("anthropic/"):
        return None
    from dspy.lm15 import CacheConfig

    return CacheConfig(mode="auto", prefix="stable")
