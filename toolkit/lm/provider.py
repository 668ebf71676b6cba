"""Providers DSPy/LiteLLM reaches by name (``openai/gpt-4o-mini``, ``anthropic/...``), and
OpenAI-compatible servers (``openai/NAME`` with ``api_base``: ``llama_cpp.server``, vLLM, ...)."""

from __future__ import annotations

import os
from typing import Any

from toolkit.lm.backend import Capabilities, ResolvedLM

PLACEHOLDER_KEY = "no-key"  # the key sent to an OpenAI-compatible server when the environment has none


def resolve(spec: str, rest: str, *, api_base: str | None = None, **_: Any) -> ResolvedLM:
    """``spec`` is ``provider/model``; keys come from the environment and are never stored."""
    import dspy

    kwargs: dict[str, Any] = {"cache": False, "num_retries": 0}
    capabilities = Capabilities(tokenizer=spec.split("/", 1)[1])
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
