"""The offline local model: llama.cpp in process (llama-cpp-python), as a DSPy engine.

Any GGUF file with a chat template runs: a registered model (``local``, ``local:MODEL``), a file
(``local:PATH.gguf``) or a Hugging Face download (``local:hf:ORG/REPO/FILE.gguf[@REVISION]``, also
``hf://...``); its chat template and tokenizer come from the file (:mod:`toolkit.lm._weights`).
One llama context is not thread-safe, so calls on one :class:`LlamaEngine` are serialised by a
lock (concurrency > 1 on the local model queues, it never corrupts state). JSON-schema output is
grammar-constrained by llama.cpp. ``prompt_cache`` controls llama.cpp's reuse of the previous
prompt's matching prefix: off, every call evaluates its whole prompt (a cold cache).
:meth:`LlamaEngine.complete_many` answers several one-document prompts in one decode loop
(:mod:`toolkit.lm._parallel`): their shared prefix evaluated once, their answers generated together
under llguidance's JSON grammar, what the grammar forces fast-forwarded; ``exact`` (the default)
makes a prompt's answer in a batch the same as alone, token for token, at some cost in speed
(``local:fast`` turns it off; :mod:`toolkit.lm._kvlayout`), on every model that can have it
(:mod:`toolkit.lm._exactness`); another falls back to ``local:fast`` and says why. Both paths
tokenise prompts with :class:`~toolkit.lm._chat.ChatTemplate`.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path
from typing import Any

from toolkit.lm import _weights as weights
from toolkit.lm._chat import ChatTemplate
from toolkit.lm._engine import SyncEngineMixin, make_response, request_messages, schema_of
from toolkit.lm._exactness import Verdict, exact_layout
from toolkit.lm._llamacpp import close_at_exit, open_llama, stderr_silenced

__all__ = ["ChatTemplate", "LlamaEngine", "LocalTokenizer", "parse_model", "resolve", "shared_engine"]


def _grammar(response_format: Any) -> Any:
    """The llama.cpp grammar of an OpenAI-style ``response_format`` (None: unconstrained): its JSON
    schema's, or any JSON when it has none (as ``create_chat_completion`` builds it)."""
    from llama_cpp import llama_grammar

    if not isinstance(response_format, dict):
        return None
    schema = schema_of(response_format)
    if schema is None:
        return llama_grammar.LlamaGrammar.from_string(llama_grammar.JSON_GBNF, verbose=False)
    return llama_grammar.LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)


class LlamaEngine(SyncEngineMixin):
    """``complete(request) -> Response`` over ``llama_cpp.Llama.create_completion`` on prompts
    tokenised by :class:`ChatTemplate` (what ``create_chat_completion`` does, contents kept plain)."""

    def __init__(self, model: str | weights.Weights | None = None, n_ctx: int | None = None,
                 n_threads: int | None = None, prompt_cache: bool = True, seed: int = 0, repeat_penalty: float = 1.0,
                 repack: bool = False, exact: bool = True) -> None:
        self.weights = model if isinstance(model, weights.Weights) else weights.locate(model)
        self.model_path: Path = self.weights.path
        self.n_ctx = n_ctx or self.weights.n_ctx
        self.n_threads = n_threads or os.cpu_count() or 1
        self.prompt_cache = prompt_cache
        self.seed = seed
        self.repeat_penalty = repeat_penalty
        self.repack = repack  # llama.cpp's weight repacking (see toolkit.lm._llamacpp.open_llama)
        verdict = exact_layout(self.weights.header) if exact else Verdict(False)
        self.exact = verdict.exact  # complete_many's answers batch-invariant (toolkit.lm._kvlayout.ExactKV)
        self.fallback = verdict if exact and not verdict.exact else None  # why exact was asked for and refused
        self._llama: Any = None
        self._template: Any = None  # ChatTemplate, with the weights
        self._parallel: Any = None
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return f"local/{self.weights.name}"

    def _load(self) -> Any:
        if self._llama is None:
            self._llama = open_llama(
                repack=self.repack, model_path=str(self.model_path), n_ctx=self.n_ctx, n_threads=self.n_threads,
                n_threads_batch=self.n_threads, seed=self.seed, verbose=False,
            )
            self._template = ChatTemplate(self._llama)
        return self._llama

    def complete(self, request: Any) -> Any:
        config = request.config
        with self._lock:
            llama = self._load()
            prompt = self._template(request_messages(request))
            if not self.prompt_cache:
                llama.reset()
            out = llama.create_completion(
                prompt=prompt.tokens, max_tokens=config.max_tokens or 1024,
                temperature=0.0 if config.temperature is None else config.temperature, seed=self.seed,
                repeat_penalty=self.repeat_penalty, stop=prompt.stop, stopping_criteria=prompt.stopping_criteria,
                grammar=_grammar(config.response_format),
            )
        usage = out.get("usage") or {}
        choice = out["choices"][0]
        tokens_in, tokens_out = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
        return make_response(self.name, choice.get("text") or "", choice.get("finish_reason") or "stop",
                             tokens_in, tokens_out)

    def complete_many(self, prompts: Sequence[tuple[list[dict[str, str]], dict[str, Any] | None, int]],
                      until: Callable[[str], str | None] | None = None) -> list[Any]:
        """Answers to ``(messages, JSON schema or None, max_tokens)`` prompts, decoded together
        (greedy; see :class:`~toolkit.lm._parallel.ParallelDecoder`): each sequence sees exactly its
        own prompt and, with ``exact``, gets the answer it gets alone. With ``prompt_cache`` on, the
        part of the shared prefix the previous call left in the context is reused; ``until`` may end
        an answer early (see :meth:`~toolkit.lm._parallel.ParallelDecoder.generate`). A list of
        :class:`~toolkit.lm._parallel.Generated`."""
        from toolkit.lm._parallel import ParallelDecoder

        with self._lock:
            llama = self._load()
            if self._parallel is None:
                self._parallel = ParallelDecoder(llama, max_sequences=MAX_SEQUENCES, n_ctx=max(16384, self.n_ctx),
                                                 exact=self.exact)
                close_at_exit(self._parallel)
            tokens = [self._template(messages).tokens for messages, _, _ in prompts]
            return self._parallel.generate(tokens, [schema for _, schema, _ in prompts], [m for _, _, m in prompts],
                                           keep_prefix=self.prompt_cache, until=until)


MAX_SEQUENCES = 16  # prompts decoded together at most (documents per batch on the local model)

_ENGINES: dict[tuple[str, bool, bool], LlamaEngine] = {}
_ENGINES_LOCK = threading.Lock()


def shared_engine(model: str | weights.Weights | None = None, prompt_cache: bool = True,
                  exact: bool = True) -> LlamaEngine:
    """One engine per (weights' sha256, cache setting, exactness asked for) per process. A model that
    cannot run exactly says why, once, on stderr (:meth:`~toolkit.lm._exactness.Verdict.note`)."""
    found = model if isinstance(model, weights.Weights) else weights.locate(model)
    key = (found.sha256, prompt_cache, exact)
    with _ENGINES_LOCK:
        if key not in _ENGINES:
            _ENGINES[key] = engine = LlamaEngine(found, prompt_cache=prompt_cache, exact=exact)
            if engine.fallback is not None:
                print(engine.fallback.note(found.name), file=sys.stderr)
        return _ENGINES[key]


class LocalTokenizer:
    """A GGUF file's own tokenizer (vocabulary only, no weights in memory), loaded on first use."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._llama: Any = None

    def __call__(self, text: str) -> int:
        if self._llama is None:
            with stderr_silenced():  # llama.cpp warns that a vocabulary has no training context
                self._llama = open_llama(model_path=self.path, vocab_only=True, verbose=False)
        return len(self._llama.tokenize(text.encode("utf-8"), add_bos=False, special=False))


@cache
def local_tokenizer(path: str) -> LocalTokenizer:
    """One tokenizer per file per process (each run registers the same one: loaded once)."""
    return LocalTokenizer(path)


def parse_model(model: str) -> tuple[str | None, bool]:
    """What follows ``local:`` as (weights source, fast): ``""``/``fast`` (the default model),
    ``MODEL``, ``PATH.gguf`` or ``hf:ORG/REPO/FILE.gguf[@REVISION]``, each optionally ``:fast``."""
    fast = model == "fast" or model.endswith(":fast")
    source = model.removesuffix("fast").removesuffix(":") if fast else model
    return source or None, fast


def resolve(spec: str, model: str, *, prompt_cache: bool = True, **_: Any) -> Any:
    """``local``, ``local:MODEL``, ``local:PATH.gguf`` or ``local:hf:ORG/REPO/FILE.gguf``: llama.cpp
    in process; one context, so one call at a time, its own tokenizer, both layouts (parallel by
    default), a prompt cache. ``...:fast`` (``local:fast`` for the default model): the parallel
    layout without batch invariance (see :class:`LlamaEngine`); its model id ends in ``+fast``, as
    does that of a model that cannot run exactly."""
    import dspy

    from toolkit.lm._backend import Capabilities, ResolvedLM
    from toolkit.lm._engine import ThreadedAsyncEngine
    from toolkit.packing import register_tokenizer

    source, fast = parse_model(model)
    found = weights.locate(source)
    engine = shared_engine(found, prompt_cache=prompt_cache, exact=not fast)  # one per file's content
    register_tokenizer(engine.name, local_tokenizer(str(engine.model_path)))
    lm = dspy.LM(engine.name, engine=engine, async_engine=ThreadedAsyncEngine(engine), cache=False, num_retries=0)
    capabilities = Capabilities(tokenizer=engine.name, concurrency="1", layouts=("parallel", "packed"),
                                prompt_cache=True, long_prompts_cost_more=True)
    model_id = found.model_id + ("" if engine.exact else "+fast")  # named as this spec names the file
    return ResolvedLM(spec, lm, model_id, capabilities, engine)
