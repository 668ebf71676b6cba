"""Language-model backends, all reached through ``dspy.LM``.

``resolve_lm(spec)`` understands:

* ``local`` or ``local:MODEL``: llama.cpp in process on weights fetched by ``toolkit models fetch``;
  ``local:PATH.gguf``, ``local:hf:ORG/REPO/FILE.gguf[@REVISION]`` or ``hf://ORG/REPO/FILE.gguf``: on
  any GGUF file, or one from the Hugging Face Hub (:mod:`toolkit.lm.weights`, :mod:`toolkit.lm.hub`);
* ``emulated:PROFILE``: a latency/rate-limit model of a provider with a deterministic extractor,
  for what-if runs in virtual time (its output is labelled emulated);
* anything else: a provider model name that DSPy/LiteLLM reaches (``openai/gpt-4o-mini``,
  ``anthropic/...``, ``ollama_chat/...``); keys come from the environment and are never logged or
  stored. ``openai/NAME`` with ``api_base`` is an OpenAI-compatible server (``llama_cpp.server``,
  vLLM, ...), sent requests it understands (see :func:`~toolkit.lm.engine.server_request`); when
  ``OPENAI_API_KEY`` is not set it is sent :data:`~toolkit.lm.provider.PLACEHOLDER_KEY` (a local
  server needs none).
"""

from __future__ import annotations

import importlib
import os
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no price-list download

from toolkit.lm.backend import Capabilities, ResolvedLM  # noqa: E402 - after the environment is set

__all__ = ["Capabilities", "ResolvedLM", "names_backend", "resolve_lm"]


def resolve_lm(spec: str = "local", api_base: str | None = None, prompt_cache: bool = True,
               seed: int = 0) -> ResolvedLM:
    """The backend of ``spec`` (see the module docstring): ``NAME`` or ``NAME:REST`` goes to the
    module ``toolkit.lm.NAME``'s ``resolve`` (see :mod:`toolkit.lm.backend`), a ``provider/model``
    name to :mod:`toolkit.lm.provider`. DSPy's response cache is off."""
    if not spec or not isinstance(spec, str):
        raise ValueError("an LM name is required, e.g. 'local', 'emulated:hosted-api', 'openai/gpt-4o-mini'")
    name, _, rest = spec.partition(":")
    backend = _backend(name)
    options = {"api_base": api_base, "prompt_cache": prompt_cache, "seed": seed}
    if backend is not None:
        return backend.resolve(spec, rest, **options)
    if spec.lower().endswith(".gguf"):
        raise ValueError(f"a GGUF file runs on the local model: --lm local:{spec}")
    if "/" not in spec:
        raise ValueError(
            f"unknown LM {spec!r}: use 'local', 'local:MODEL', 'emulated:PROFILE' or a provider/model name"
        )
    from toolkit.lm import provider

    return provider.resolve(spec, spec, **options)


def names_backend(spec: str) -> bool:
    """Whether ``spec`` (``NAME`` or ``NAME:REST``) names a backend module (not a provider model)."""
    return _backend(spec.partition(":")[0]) is not None


def _backend(name: str) -> Any:
    """The module ``toolkit.lm.<name>`` if it is a backend (has ``resolve``), else None."""
    if not name.isidentifier() or name in ("backend", "provider"):
        return None
    try:
        module = importlib.import_module(f"toolkit.lm.{name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"toolkit.lm.{name}":
            return None
        raise
    return module if callable(getattr(module, "resolve", None)) else None
