"""Language-model backends, all reached through ``dspy.LM``.

``resolve_lm(spec)`` understands:

* ``local`` or ``local:MODEL``: llama.cpp in process on weights fetched by ``toolkit models fetch``;
* ``emulated:PROFILE``: a latency/rate-limit model of a provider with a deterministic extractor,
  for what-if runs in virtual time (its output is labelled emulated);
* anything else: a provider model name that DSPy/LiteLLM reaches (``openai/gpt-4o-mini``,
  ``anthropic/...``, ``ollama_chat/...``); keys come from the environment and are never logged or
  stored. ``openai/NAME`` with ``api_base`` is an OpenAI-compatible server (``llama_cpp.server``,
  vLLM, ...), sent requests it understands (see :func:`~toolkit.lm.engine.server_request`); when
  ``OPENAI_API_KEY`` is not set it is sent :data:`PLACEHOLDER_KEY` (a local server needs none).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no price-list download

PLACEHOLDER_KEY = "no-key"  # the key sent to an OpenAI-compatible server when the environment has none


@dataclass
class ResolvedLM:
    """A ``dspy.LM`` plus what the toolkit needs to know about it."""

    spec: str  # as the user gave it
    lm: Any  # dspy.LM
    kind: str  # local | emulated | provider
    model_id: str  # model name (and weights hash for local models)
    engine: Any = None  # the toolkit engine behind it, if any
    emulated: bool = False

    @property
    def is_async_native(self) -> bool:
        """True if calls are pure asyncio (the emulated provider): it can run in virtual time."""
        return self.kind == "emulated"


def resolve_lm(spec: str = "local", api_base: str | None = None, prompt_cache: bool = True,
               seed: int = 0) -> ResolvedLM:
    """Build the ``dspy.LM`` for ``spec`` (see module docstring). DSPy's response cache is off."""
    import dspy

    if not spec or not isinstance(spec, str):
        raise ValueError("an LM name is required, e.g. 'local', 'emulated:hosted-api', 'openai/gpt-4o-mini'")
    kind, _, rest = spec.partition(":")
    if kind == "local":
        from toolkit.lm import weights
        from toolkit.lm.engine import ThreadedAsyncEngine
        from toolkit.lm.local import shared_engine

        engine = shared_engine(rest or None, prompt_cache=prompt_cache)
        lm = dspy.LM(engine.name, engine=engine, async_engine=ThreadedAsyncEngine(engine), cache=False, num_retries=0)
        return ResolvedLM(spec, lm, "local", f"{engine.spec.name}@sha256:{weights.get_spec(rest or None).sha256[:16]}",
                          engine)
    if kind == "emulated":
        from toolkit.lm.emulated import EmulatedEngine, load_profile

        engine = EmulatedEngine(load_profile(rest or "hosted-api"), seed=seed)
        lm = dspy.LM(engine.name, engine=engine.sync_face(), async_engine=engine, cache=False, num_retries=0)
        return ResolvedLM(spec, lm, "emulated", engine.name, engine, emulated=True)
    if "/" not in spec:
        raise ValueError(
            f"unknown LM {spec!r}: use 'local', 'local:MODEL', 'emulated:PROFILE' or a provider/model name"
        )
    kwargs: dict[str, Any] = {"cache": False, "num_retries": 0}
    if not api_base:
        return ResolvedLM(spec, dspy.LM(spec, **kwargs), "provider", spec)
    if not spec.startswith("openai/"):
        return ResolvedLM(spec, dspy.LM(spec, api_base=api_base, **kwargs), "provider", spec)
    from toolkit.lm.engine import AsyncCompatibleServerEngine, CompatibleServerEngine

    key = {} if os.environ.get("OPENAI_API_KEY") else {"api_key": PLACEHOLDER_KEY}  # a real key stays in the env
    engine = CompatibleServerEngine(dspy.LM(spec, api_base=api_base, **key, **kwargs))
    lm = dspy.LM(spec, engine=engine, async_engine=AsyncCompatibleServerEngine(engine), **kwargs)
    return ResolvedLM(spec, lm, "provider", spec, engine)
