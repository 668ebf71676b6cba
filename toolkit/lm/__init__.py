"""Language-model backends, all reached through ``dspy.LM``.

``resolve_lm(spec)`` understands:

* ``local`` or ``local:MODEL``: llama.cpp in process on weights fetched by ``toolkit models fetch``;
  ``local:PATH.gguf``, ``local:hf:ORG/REPO/FILE.gguf[@REVISION]`` or ``hf://ORG/REPO/FILE.gguf``: on
  any GGUF file, or one from the Hugging Face Hub (:mod:`toolkit.lm._weights`, :mod:`toolkit.lm._hub`);
* ``emulated:PROFILE``: a latency/rate-limit model of a provider with a deterministic extractor,
  for what-if runs in virtual time (its output is labelled emulated);
* anything else: a provider model name that DSPy/LiteLLM reaches (``openai/gpt-4o-mini``,
  ``anthropic/...``, ``ollama_chat/...``); keys come from the environment and are never logged or
  stored. ``openai/NAME`` with ``api_base`` is an OpenAI-compatible server (``llama_cpp.server``,
  vLLM, ...), sent requests it understands (see :func:`~toolkit.lm._engine.server_request`); when
  ``OPENAI_API_KEY`` is not set it is sent :data:`~toolkit.lm._provider.PLACEHOLDER_KEY` (a local
  server needs none).
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no price-list download

from toolkit.lm._backend import Capabilities, ResolvedLM  # after the environment is set
from toolkit.lm._catalog import list_runnable, remember_calibration
from toolkit.lm._hub import cache_dir as hf_cache_dir
from toolkit.lm._prefixcache import CacheRules, PrefixCache
from toolkit.lm._profiles import Profile, available_profiles, load_profile
from toolkit.lm._weights import (
    DEFAULT_MODEL,
    MODELS,
    WeightsError,
    fetch as fetch_model,
    locate as locate_model,
    model_dir,
)

if TYPE_CHECKING:
    from toolkit.lm._emulated import TOKENIZER, Answer, EmulatedEngine, Prompt, documents_in_prompt
    from toolkit.lm._engine import cached_tokens, schema_of
    from toolkit.lm._provider import PLACEHOLDER_KEY

_LAZY = {  # names whose modules import DSPy: loaded when first used
    **dict.fromkeys(["TOKENIZER", "Answer", "EmulatedEngine", "Prompt", "documents_in_prompt"], "toolkit.lm._emulated"),
    **dict.fromkeys(["cached_tokens", "schema_of"], "toolkit.lm._engine"),
    "PLACEHOLDER_KEY": "toolkit.lm._provider",
}

__all__ = [
    "DEFAULT_MODEL", "MODELS", "fetch_model", "hf_cache_dir", "locate_model", "model_dir", "Answer", "CacheRules",
    "Capabilities", "EmulatedEngine", "PLACEHOLDER_KEY", "PrefixCache", "Profile", "Prompt", "ResolvedLM", "TOKENIZER",
    "available_profiles", "WeightsError", "cached_tokens", "documents_in_prompt", "list_runnable", "load_profile",
    "names_backend", "remember_calibration", "resolve_lm", "schema_of",
]


def resolve_lm(spec: str = "local", api_base: str | None = None, prompt_cache: bool = True,
               seed: int = 0) -> ResolvedLM:
    """The backend of ``spec`` (see the module docstring): ``NAME`` or ``NAME:REST`` goes to the
    ``resolve`` of its module in :data:`BACKENDS` (see :mod:`toolkit.lm._backend`), a ``provider/model``
    name to :mod:`toolkit.lm._provider`. DSPy's response cache is off."""
    if not spec or not isinstance(spec, str):
        raise ValueError("an LM name is required, e.g. 'local', 'emulated:hosted-api', 'openai/gpt-4o-mini'")
    name, _, rest = spec.partition(":")
    backend = _backend(name)
    if backend is not None:
        return backend.resolve(spec, rest, api_base=api_base, prompt_cache=prompt_cache, seed=seed)
    if spec.lower().endswith(".gguf"):
        raise ValueError(f"a GGUF file runs on the local model: --lm local:{spec}")
    if "/" not in spec:
        raise ValueError(
            f"unknown LM {spec!r}: use 'local', 'local:MODEL', 'emulated:PROFILE' or a provider/model name"
        )
    from toolkit.lm import _provider as provider

    return provider.resolve(spec, spec, api_base=api_base, prompt_cache=prompt_cache, seed=seed)


def names_backend(spec: str) -> bool:
    """Whether ``spec`` (``NAME`` or ``NAME:REST``) names a backend (not a provider model)."""
    return _backend(spec.partition(":")[0]) is not None


BACKENDS = {"local": "toolkit.lm._local", "emulated": "toolkit.lm._emulated", "hf": "toolkit.lm._hf"}
"""Spec prefixes (``NAME:...``) and the module whose ``resolve`` turns them into a backend."""


def _backend(name: str) -> Any:
    """The backend module of the spec prefix ``name`` (see :data:`BACKENDS`), else None."""
    module = BACKENDS.get(name)
    return importlib.import_module(module) if module else None


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'toolkit.lm' has no attribute {name!r}")
