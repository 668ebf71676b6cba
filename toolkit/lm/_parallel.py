"""Several chat prompts decoded together by llama.cpp: one sequence per prompt.

The prompts' common prefix (instructions and worked example) is evaluated once; each prompt's own
tokens after it, and the answers are then generated together, the live sequences' tokens in one
decode step. On a CPU a decode step of a few dozen tokens costs a fraction more than a step of one,
so the answers come out faster than one after the other, while each sequence sees exactly the
prompt it would see alone. Where the sequences live and which kernels compute them is
:mod:`toolkit.lm._kvlayout`'s: by default (``exact``) a sequence's numbers in a batch are the
same as alone, so its answer is too, token for token.

Sampling is greedy (temperature 0) under each sequence's JSON schema, enforced by llguidance with
the layout the worked example shows (``", "`` and ``": "`` separators, no other whitespace). The
most likely token is tried first and the grammar's mask is computed only if it is refused. What the
grammar forces next (keys, punctuation, a single allowed id or type: about two thirds of an
extraction answer) is appended without sampling and evaluated in the same decode step
("fast-forward", as in llguidance and SGLang): fewer, fuller steps.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from toolkit.lm._kvlayout import ExactKV, SharedKV, common_prefix

if TYPE_CHECKING:
    from llguidance._lib import JsonCompileOptions

# The worked example's JSON layout (json.dumps defaults): with no free whitespace the grammar
# forces every key and separator, so they are fast-forwarded instead of sampled.
JSON_LAYOUT: JsonCompileOptions = {"item_separator": ", ", "key_separator": ": ", "whitespace_flexible": False}


@dataclass
class Generated:
    """One sequence's answer: its text, token counts and why it stopped (``stop`` or ``length``)."""

    text: str
    prompt_tokens: int  # tokens of this prompt evaluated for it (the shared prefix once, on the first)
    completion_tokens: int  # sampled and fast-forwarded
    finish_reason: str  # stop, length (max_tokens reached) or repeat (ended by ``until``)


class ParallelDecoder:
    """Decodes up to ``max_sequences`` prompts together on ``llama``'s weights (own contexts);
    ``exact``: batch-invariant arithmetic (:class:`~toolkit.lm._kvlayout.ExactKV`), else the faster
    shared cache (:class:`~toolkit.lm._kvlayout.SharedKV`)."""

    def __init__(self, llama: Any, max_sequences: int = 16, n_ctx: int = 16384, exact: bool = True) -> None:
        self.llama = llama
        self.max_sequences = max_sequences
        self.exact = exact
        self._kv: Any = ExactKV(llama, max_sequences, n_ctx) if exact else SharedKV(llama, max_sequences, n_ctx)
        self.vocab = llama._model.vocab
        self.n_vocab = llama.n_vocab()
        self._closing: dict[int, bool] = {}
        self._tokenizer: Any = None  # llguidance's view of the vocabulary, built on first use (~1 s)

    def close(self) -> None:
        self._kv.close()

    def _matcher(self, schema: dict[str, Any] | None) -> Any:
        """An llguidance matcher of ``schema`` in :data:`JSON_LAYOUT` (None: unconstrained)."""
        if schema is None:
            return None
        from llguidance import LLMatcher
        from llguidance.llamacpp import lltokenizer_from_vocab

        if self._tokenizer is None:
            with warnings.catch_warnings():  # it reads token attributes through a deprecated llama.cpp call
                warnings.simplefilter("ignore", DeprecationWarning)
                self._tokenizer = lltokenizer_from_vocab(self.vocab)
        grammar = LLMatcher.grammar_from_json_schema(json.dumps(schema), overrides=JSON_LAYOUT)
        matcher = LLMatcher(self._tokenizer, grammar, log_level=0)
        if matcher.is_error():
            raise ValueError(f"unusable JSON schema: {matcher.get_error()}")
        return matcher

    def _pick(self, matcher: Any, logits: np.ndarray) -> int:
        """The greedy token ``matcher`` allows (None: unconstrained), consumed by the matcher."""
        token = int(np.argmax(logits))
        if matcher is None or matcher.try_consume_tokens([token]) == 1:
            return token
        allowed = np.unpackbits(np.frombuffer(matcher.compute_bitmask(), dtype=np.uint8), bitorder="little")
        token = int(np.argmax(np.where(allowed[: self.n_vocab].astype(bool), logits, -np.inf)))
        if not matcher.consume_token(token):
            raise RuntimeError(f"grammar refused its own token: {matcher.get_error()}")
        return token

    def generate(self, prompts: list[list[int]], schemas: list[dict[str, Any] | None],
                 max_tokens: list[int], keep_prefix: bool = False,
                 until: Callable[[str], str | None] | None = None) -> list[Generated]:
        """Answers to ``prompts`` (token lists), each under its JSON schema and ``max_tokens``.
        ``keep_prefix``: reuse what the previous call's shared prefix has in common with this one's
        (a warm prompt cache); otherwise every call starts from an empty context. ``until(text)``,
        asked whenever an answer closes a JSON object, may end that answer early: it returns the
        answer's final text (finish reason ``repeat``), or None to go on."""
        import llama_cpp

        n = len(prompts)
        if not 0 < n <= self.max_sequences:
            raise ValueError(f"between 1 and {self.max_sequences} prompts at a time, got {n}")
        matchers = [self._matcher(schema) for schema in schemas]
        shared = common_prefix(prompts) if n > 1 else len(prompts[0]) - 1
        shared = min(shared, min(len(p) for p in prompts) - 1)  # every sequence keeps a token of its own
        first, reuse = self._kv.prompt(prompts, shared, keep_prefix, max_tokens)
        logits = dict(enumerate(first))
        out: list[list[int]] = [[] for _ in range(n)]
        final: dict[int, str] = {}
        reason = ["length"] * n
        position = [len(p) for p in prompts]
        live = list(range(n))
        while live:
            step: list[tuple[int, list[int]]] = []
            for s in list(live):
                matcher = matchers[s]
                token = self._pick(matcher, logits[s])
                if llama_cpp.llama_vocab_is_eog(self.vocab, token):
                    reason[s] = "stop"
                    live.remove(s)
                    continue
                new = [token]
                if matcher is not None and (forced := matcher.compute_ff_tokens()):
                    matcher.consume_tokens(forced)
                    new += forced
                new = new[: max_tokens[s] - len(out[s])]
                out[s] += new
                if until is not None and (text := self._until(until, out[s], len(new))) is not None:
                    final[s], reason[s] = text, "repeat"
                    live.remove(s)
                elif matcher is not None and matcher.is_stopped():
                    reason[s] = "stop"
                    live.remove(s)
                elif len(out[s]) >= max_tokens[s]:
                    live.remove(s)
                else:
                    step.append((s, new))
            if not step:
                break
            for (s, new), row in zip(step, self._kv.step([(s, new, position[s]) for s, new in step])):
                position[s] += len(new)
                logits[s] = row
        return [Generated(final.get(s) or self._text(out[s]), len(prompts[s]) - (reuse if s == 0 else shared),
                          len(out[s]), reason[s]) for s in range(n)]

    def _until(self, until: Callable[[str], str | None], tokens: list[int], new: int) -> str | None:
        """``until`` asked after each of the last ``new`` tokens that closes a JSON object (on the
        answer up to that token: a fast-forward may already have opened the next object)."""
        for end in range(len(tokens) - new + 1, len(tokens) + 1):
            if self._closes(tokens[end - 1]) and (text := until(self._text(tokens[:end]))) is not None:
                return text
        return None

    def _text(self, tokens: list[int]) -> str:
        return self.llama.detokenize(tokens).decode("utf-8", errors="ignore")

    def _closes(self, token: int) -> bool:
        """Whether ``token``'s text closes a JSON object."""
        if token not in self._closing:
            self._closing[token] = "}" in self._text([token])
        return self._closing[token]

