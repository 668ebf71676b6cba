"""The offline local model: llama.cpp in process (llama-cpp-python), as a DSPy engine.

One llama context is not thread-safe, so calls on one :class:`LlamaEngine` are serialised by a
lock (concurrency > 1 on the local model queues, it never corrupts state). JSON-schema output is
grammar-constrained by llama.cpp. ``prompt_cache`` controls llama.cpp's reuse of the previous
prompt's matching prefix: off, every call evaluates its whole prompt (a cold cache).
:meth:`LlamaEngine.complete_many` answers several one-document prompts in one decode loop
(:mod:`toolkit.lm.parallel`): their shared prefix evaluated once, their answers generated together
under llguidance's JSON grammar, what the grammar forces fast-forwarded; ``exact`` (the default)
makes a prompt's answer in a batch the same as alone, token for token, at some cost in speed
(``local:fast`` turns it off; :mod:`toolkit.lm.kvlayout`). Both paths tokenise prompts
with :class:`ChatTemplate`: only the chat template's own markup becomes control tokens, so a document
containing ``<|im_end|>`` is read as text.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
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


_MARK = re.compile("\ue000([0-9]+)\ue001")  # a message's place in the rendered template


@dataclass
class ChatPrompt:
    """A rendered chat prompt: its tokens and what ends the model's turn."""

    tokens: list[int]
    stop: list[str]  # the template's stop strings
    stopping_criteria: Any  # llama_cpp.StoppingCriteriaList (the end-of-turn token)


class ChatTemplate:
    """The model's chat template, rendered as ``create_chat_completion`` renders it (its Jinja
    template, no BOS added) and tokenised so that only the template's markup can become control
    tokens: message contents are plain text (``special=False``), whatever they contain. For contents
    without control-token text the tokens are exactly ``create_chat_completion``'s."""

    def __init__(self, llama: Any) -> None:
        from llama_cpp import llama_chat_format

        self.llama = llama
        eos, bos = llama.token_eos(), llama.token_bos()
        self._format = llama_chat_format.Jinja2ChatFormatter(  # as llama_cpp.Llama registers its default
            template=llama.metadata["tokenizer.chat_template"],
            eos_token=llama._model.token_get_text(eos) if eos != -1 else "",
            bos_token=llama._model.token_get_text(bos) if bos != -1 else "",
            stop_token_ids=[eos],
        )

    def __call__(self, messages: list[dict[str, str]]) -> ChatPrompt:
        """``messages`` rendered and tokenised. The template is rendered with a placeholder per
        message to tell its markup from the contents; llama.cpp's own split (control tokens, then
        each stretch of text between them tokenised alone) is applied to the markup's control
        tokens only. Raises ValueError if the template alters contents (then they cannot be located)."""
        contents = [m["content"] for m in messages]
        marked = self._format(messages=[{**m, "content": f"\ue000{i}\ue001"} for i, m in enumerate(messages)])
        result = self._format(messages=messages)
        parts = _MARK.split(marked.prompt)  # markup, message index, markup, ...
        if "".join(contents[int(p)] if i % 2 else p for i, p in enumerate(parts)) != result.prompt:
            raise ValueError("the chat template alters message contents: they cannot be told from its markup")
        tokens: list[int] = []
        text = ""
        for i, part in enumerate(parts):
            if i % 2:
                text += contents[int(part)]
                continue
            for piece in self._split_markup(part):
                if isinstance(piece, str):
                    text += piece
                else:
                    tokens += self._plain(text) + [piece]
                    text = ""
        return ChatPrompt(tokens + self._plain(text), list(result.stop or []), result.stopping_criteria)

    def _plain(self, text: str) -> list[int]:
        return self.llama.tokenize(text.encode("utf-8"), add_bos=False, special=False) if text else []

    def _split_markup(self, markup: str) -> list[str | int]:
        """``markup`` as text pieces and the control tokens llama.cpp finds in it (as with
        ``special=True``: control and unknown-attribute tokens; user-defined ones are plain text)."""
        import llama_cpp

        special = llama_cpp.LLAMA_TOKEN_ATTR_CONTROL | llama_cpp.LLAMA_TOKEN_ATTR_UNKNOWN
        vocab = self.llama._model.vocab
        pieces: list[str | int] = []
        at = 0
        for token in self.llama.tokenize(markup.encode("utf-8"), add_bos=False, special=True):
            if llama_cpp.llama_vocab_get_attr(vocab, token) & special:
                spelt = self.llama._model.token_get_text(token)
                found = markup.index(spelt, at)
                pieces += [markup[at:found], token]
                at = found + len(spelt)
        return pieces + [markup[at:]]


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

    def __init__(self, model: str | None = None, n_ctx: int | None = None, n_threads: int | None = None,
                 prompt_cache: bool = True, seed: int = 0, repeat_penalty: float = 1.0, repack: bool = False,
                 exact: bool = True) -> None:
        self.spec = weights.get_spec(model)
        self.model_path: Path = weights.require(self.spec.name)
        self.n_ctx = n_ctx or self.spec.n_ctx
        self.n_threads = n_threads or os.cpu_count() or 1
        self.prompt_cache = prompt_cache
        self.seed = seed
        self.repeat_penalty = repeat_penalty
        self.repack = repack  # llama.cpp's weight repacking (see _open_llama)
        self.exact = exact  # complete_many's answers batch-invariant (toolkit.lm.kvlayout.ExactKV)
        self._llama: Any = None
        self._template: Any = None  # ChatTemplate, with the weights
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
        (greedy; see :class:`~toolkit.lm.parallel.ParallelDecoder`): each sequence sees exactly its
        own prompt and, with ``exact``, gets the answer it gets alone. With ``prompt_cache`` on, the
        part of the shared prefix the previous call left in the context is reused; ``until`` may end
        an answer early (see :meth:`~toolkit.lm.parallel.ParallelDecoder.generate`). A list of
        :class:`~toolkit.lm.parallel.Generated`."""
        from toolkit.lm.parallel import ParallelDecoder

        with self._lock:
            llama = self._load()
            if self._parallel is None:
                self._parallel = ParallelDecoder(llama, max_sequences=MAX_SEQUENCES, n_ctx=max(16384, self.n_ctx),
                                                 exact=self.exact)
                _OPEN.append(self._parallel)
            tokens = [self._template(messages).tokens for messages, _, _ in prompts]
            return self._parallel.generate(tokens, [schema for _, schema, _ in prompts], [m for _, _, m in prompts],
                                           keep_prefix=self.prompt_cache, until=until)


MAX_SEQUENCES = 16  # prompts decoded together at most (documents per batch on the local model)

_ENGINES: dict[tuple[str, bool, bool], LlamaEngine] = {}
_ENGINES_LOCK = threading.Lock()


def shared_engine(model: str | None = None, prompt_cache: bool = True, exact: bool = True) -> LlamaEngine:
    """One engine per (model, cache setting, exactness) per process."""
    key = (weights.get_spec(model).name, prompt_cache, exact)
    with _ENGINES_LOCK:
        if key not in _ENGINES:
            _ENGINES[key] = LlamaEngine(model, prompt_cache=prompt_cache, exact=exact)
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


def resolve(spec: str, model: str, *, prompt_cache: bool = True, **_: Any) -> Any:
    """``local`` or ``local:MODEL``: llama.cpp in process; one context, so one call at a time, its
    own tokenizer, both layouts (parallel by default), a prompt cache. ``local:fast`` or
    ``local:MODEL:fast``: the parallel layout without batch invariance (see :class:`LlamaEngine`);
    its model id ends in ``+fast``."""
    import dspy

    from toolkit.lm.backend import Capabilities, ResolvedLM
    from toolkit.lm.engine import ThreadedAsyncEngine
    from toolkit.tokens import register_tokenizer

    fast = model == "fast" or model.endswith(":fast")
    name = model.removesuffix("fast").removesuffix(":") if fast else model
    engine = shared_engine(name or None, prompt_cache=prompt_cache, exact=not fast)
    register_tokenizer(engine.name, local_tokenizer(engine.spec.name))
    lm = dspy.LM(engine.name, engine=engine, async_engine=ThreadedAsyncEngine(engine), cache=False, num_retries=0)
    capabilities = Capabilities(tokenizer=engine.name, concurrency="1", layouts=("parallel", "packed"),
                                prompt_cache=True, long_prompts_cost_more=True)
    model_id = f"{engine.spec.name}@sha256:{engine.spec.sha256[:16]}{'' if engine.exact else '+fast'}"
    return ResolvedLM(spec, lm, model_id, capabilities, engine)
