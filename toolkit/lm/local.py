"""The offline local model: llama.cpp in process (llama-cpp-python), as a DSPy engine.

One llama context is not thread-safe, so calls on one :class:`LlamaEngine` are serialised by a
lock (concurrency > 1 on the local model queues, it never corrupts state). JSON-schema output is
grammar-constrained by llama.cpp. ``prompt_cache`` controls llama.cpp's reuse of the previous
prompt's matching prefix: off, every call evaluates its whole prompt (a cold cache).
:meth:`LlamaEngine.complete_many` answers several one-document prompts in one decode loop
(:mod:`toolkit.lm.parallel`): their shared prefix evaluated once, their answers generated together
under llguidance's JSON grammar, what the grammar forces fast-forwarded.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from toolkit.lm import weights
from toolkit.lm.engine import SyncEngineMixin, make_response, request_messages, schema_of

_OPEN: list[Any] = []  # llama objects, closed at exit (their __del__ fails during interpreter shutdown)


_PARAMS_LOCK = threading.Lock()


def _open_llama(repack: bool = False, **kwargs: Any) -> Any:
    """A ``llama_cpp.Llama``; ``repack``: let llama.cpp repack the weights for its CPU GEMM
    kernels (its default, ``use_extra_bufts``). Off by default: on this project's CPUs (AVX-512,
    2 cores) the plain Q4_K kernels evaluate prompts about 35% faster (107-119 against 78-89
    tokens/s, measured side by side on NCBI prompts). ``Llama`` has no argument for it, so its
    model-parameter defaults are swapped while it loads."""
    import llama_cpp
    import llama_cpp.llama_cpp as low

    defaults = low.llama_model_default_params

    def params() -> Any:
        p = defaults()
        p.use_extra_bufts = repack
        return p

    with _PARAMS_LOCK:
        low.llama_model_default_params = params
        try:
            llama = llama_cpp.Llama(**kwargs)
        finally:
            low.llama_model_default_params = defaults
    if not _OPEN:
        atexit.register(_close_all)
    _OPEN.append(llama)
    return llama


@contextmanager
def _stderr_silenced() -> Iterator[None]:
    """Mute file descriptor 2 (where llama.cpp's C code logs) for the duration."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _close_all() -> None:
    while _OPEN:
        _OPEN.pop().close()


class LlamaEngine(SyncEngineMixin):
    """``complete(request) -> Response`` over ``llama_cpp.Llama.create_chat_completion``."""

    def __init__(self, model: str | None = None, n_ctx: int | None = None, n_threads: int | None = None,
                 prompt_cache: bool = True, seed: int = 0, repeat_penalty: float = 1.0, repack: bool = False) -> None:
        self.spec = weights.get_spec(model)
        self.model_path: Path = weights.require(self.spec.name)
        self.n_ctx = n_ctx or self.spec.n_ctx
        self.n_threads = n_threads or os.cpu_count() or 1
        self.prompt_cache = prompt_cache
        self.seed = seed
        self.repeat_penalty = repeat_penalty
        self.repack = repack  # llama.cpp's weight repacking (see _open_llama)
        self._llama: Any = None
        self._parallel: Any = None
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return f"local/{self.spec.name}"

    def _load(self) -> Any:
        if self._llama is None:
            self._llama = _open_llama(
                repack=self.repack, model_path=str(self.model_path), n_ctx=self.n_ctx, n_threads=self.n_threads,
                n_threads_batch=self.n_threads, seed=self.seed, verbose=False,
            )
        return self._llama

    def complete(self, request: Any) -> Any:
        config = request.config
        kwargs: dict[str, Any] = {
            "messages": request_messages(request),
            "max_tokens": config.max_tokens or 1024,
            "temperature": 0.0 if config.temperature is None else config.temperature,
            "seed": self.seed,
            "repeat_penalty": self.repeat_penalty,
        }
        schema = schema_of(config.response_format)
        if schema is not None:
            kwargs["response_format"] = {"type": "json_object", "schema": schema}
        elif isinstance(config.response_format, dict):
            kwargs["response_format"] = {"type": "json_object"}
        with self._lock:
            llama = self._load()
            if not self.prompt_cache:
                llama.reset()
            out = llama.create_chat_completion(**kwargs)
        usage = out.get("usage") or {}
        choice = out["choices"][0]
        tokens_in, tokens_out = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
        return make_response(self.name, choice["message"].get("content") or "", choice.get("finish_reason") or "stop",
                             tokens_in, tokens_out)

    def complete_many(self, prompts: Sequence[tuple[list[dict[str, str]], dict[str, Any] | None, int]],
                      until: Callable[[str], str | None] | None = None) -> list[Any]:
        """Answers to ``(messages, JSON schema or None, max_tokens)`` prompts, decoded together in
        one llama context (greedy; see :class:`~toolkit.lm.parallel.ParallelDecoder`): each sequence
        sees exactly its own prompt. With ``prompt_cache`` on, the part of the shared prefix the
        previous call left in the context is reused; ``until`` may end an answer early (see
        :meth:`~toolkit.lm.parallel.ParallelDecoder.generate`). A list of :class:`~toolkit.lm.parallel.Generated`."""
        from toolkit.lm.parallel import ParallelDecoder

        with self._lock:
            llama = self._load()
            if self._parallel is None:
                self._parallel = ParallelDecoder(llama, max_sequences=MAX_SEQUENCES, n_ctx=max(16384, self.n_ctx))
                _OPEN.append(self._parallel)
            tokens = [self._parallel.tokenize(messages) for messages, _, _ in prompts]
            return self._parallel.generate(tokens, [schema for _, schema, _ in prompts], [m for _, _, m in prompts],
                                           keep_prefix=self.prompt_cache, until=until)


MAX_SEQUENCES = 16  # prompts decoded together at most (documents per batch on the local model)

_ENGINES: dict[tuple[str, bool], LlamaEngine] = {}
_ENGINES_LOCK = threading.Lock()


def shared_engine(model: str | None = None, prompt_cache: bool = True) -> LlamaEngine:
    """One engine per (model, cache setting) per process: the weights are loaded once."""
    key = (weights.get_spec(model).name, prompt_cache)
    with _ENGINES_LOCK:
        if key not in _ENGINES:
            _ENGINES[key] = LlamaEngine(model, prompt_cache=prompt_cache)
        return _ENGINES[key]


class LocalTokenizer:
    """The local model's own tokenizer (vocabulary only, no weights in memory), loaded on first use."""

    def __init__(self, model: str | None = None) -> None:
        self.model = model
        self._llama: Any = None

    def __call__(self, text: str) -> int:
        if self._llama is None:
            path = weights.require(self.model)
            with _stderr_silenced():  # llama.cpp warns that a vocabulary has no training context
                self._llama = _open_llama(model_path=str(path), vocab_only=True, verbose=False)
        return len(self._llama.tokenize(text.encode("utf-8"), add_bos=False, special=False))


@lru_cache(maxsize=None)
def local_tokenizer(model: str) -> LocalTokenizer:
    """One tokenizer per model per process (each run registers the same one: loaded once)."""
    return LocalTokenizer(model)
