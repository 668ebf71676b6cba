"""Several chat prompts decoded together in one llama.cpp context: one sequence per prompt.

The prompts' common prefix (instructions and worked example) is evaluated once and shared by every
sequence (a unified KV cache: the cells are shared, not copied); each prompt's own tokens are
evaluated in the same batches, and the answers are then generated together, one token per live
sequence per decode step. On a CPU one decode step of a few sequences costs little more than a step
of one, so the answers come out several times faster than one after the other, while each
sequence sees exactly the prompt it would see alone.

Sampling is greedy (temperature 0) under each sequence's JSON-schema grammar, checked lazily: the
most likely token is tested against the grammar first, and only if the grammar rejects it is the
grammar applied to the whole vocabulary (as llama.cpp's own common sampler does).
"""

from __future__ import annotations

import ctypes
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class Generated:
    """One sequence's answer: its text, token counts and why it stopped (``stop`` or ``length``)."""

    text: str
    prompt_tokens: int  # tokens of this prompt evaluated for it (the shared prefix once, on the first)
    completion_tokens: int
    finish_reason: str  # stop, length (max_tokens reached) or repeat (ended by ``until``)


class ParallelDecoder:
    """Decodes up to ``max_sequences`` prompts together on ``llama``'s weights (own context)."""

    def __init__(self, llama: Any, max_sequences: int = 16, n_ctx: int = 16384, n_batch: int = 512) -> None:
        import llama_cpp
        from llama_cpp import _internals, llama_chat_format

        self.llama = llama
        self.max_sequences = max_sequences
        self.n_batch = n_batch
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = params.n_ubatch = n_batch
        params.n_seq_max = max_sequences
        params.kv_unified = True  # shared prefix cells; the context is not split per sequence
        params.n_threads = params.n_threads_batch = llama.context_params.n_threads
        self._ctx = _internals.LlamaContext(model=llama._model, params=params, verbose=False)
        self._batch = llama_cpp.llama_batch_init(n_batch, 0, max_sequences)
        self.vocab = llama._model.vocab
        self.n_vocab = llama.n_vocab()
        eos, bos = llama.token_eos(), llama.token_bos()
        self._format = llama_chat_format.Jinja2ChatFormatter(
            template=llama.metadata["tokenizer.chat_template"],
            eos_token=llama._model.token_get_text(eos) if eos != -1 else "",
            bos_token=llama._model.token_get_text(bos) if bos != -1 else "",
        )
        self._prefix: list[int] = []  # the shared prefix in the context (for keep_prefix)
        self._closing: dict[int, bool] = {}
        self._full = _internals.LlamaTokenDataArray(n_vocab=self.n_vocab)
        self._one = _internals.LlamaTokenDataArray(n_vocab=1)

    def close(self) -> None:
        import llama_cpp

        if self._batch is not None:
            llama_cpp.llama_batch_free(self._batch)
            self._batch = None
        self._ctx.close()

    def tokenize(self, messages: list[dict[str, str]]) -> list[int]:
        """The prompt's tokens exactly as ``create_chat_completion`` would build them."""
        result = self._format(messages=messages)
        return self.llama.tokenize(result.prompt.encode("utf-8"), add_bos=not result.added_special, special=True)

    # ------------------------------------------------------------------------------------ decoding
    def _decode(self, entries: list[tuple[int, int, tuple[int, ...], bool]]) -> None:
        """One ``llama_decode`` of (token, position, sequences, wants logits) entries."""
        import llama_cpp

        b = self._batch
        b.n_tokens = len(entries)
        for i, (token, pos, seqs, logits) in enumerate(entries):
            b.token[i] = token
            b.pos[i] = pos
            b.n_seq_id[i] = len(seqs)
            for j, s in enumerate(seqs):
                b.seq_id[i][j] = s
            b.logits[i] = logits
        if llama_cpp.llama_decode(self._ctx.ctx, b) != 0:
            raise RuntimeError("llama_decode failed (context full?)")

    def _logits(self, index: int) -> np.ndarray:
        import llama_cpp

        ptr = llama_cpp.llama_get_logits_ith(self._ctx.ctx, index)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).copy()

    def _pick(self, grammar: Any, logits: np.ndarray) -> int:
        """Greedy token allowed by ``grammar`` (None: unconstrained)."""
        import llama_cpp

        token = int(np.argmax(logits))
        if grammar is None:
            return token
        one = self._one
        one.candidates_data.id[0] = token
        one.candidates_data.logit[0] = logits[token]
        one.candidates_data.p[0] = 0.0
        one.candidates.size, one.candidates.sorted, one.candidates.selected = 1, False, -1
        llama_cpp.llama_sampler_apply(grammar, ctypes.byref(one.candidates))
        if np.isfinite(one.candidates_data.logit[0]):
            return token
        full = self._full
        full.copy_logits(logits)
        full.candidates.selected = -1
        llama_cpp.llama_sampler_apply(grammar, ctypes.byref(full.candidates))
        allowed = full.candidates_data.logit[: full.candidates.size]
        return int(full.candidates_data.id[int(np.argmax(allowed))])

    def _keep(self, prefix: list[int], n: int) -> int:
        """Keep the longest part of the previous call's shared prefix that starts ``prefix`` (for
        sequences ``0..n-1``), drop everything else; the number of tokens kept."""
        import llama_cpp

        memory = llama_cpp.llama_get_memory(self._ctx.ctx)
        reuse = _common_prefix([self._prefix, prefix]) if self._prefix else 0
        if not reuse:
            llama_cpp.llama_memory_clear(memory, True)
            return 0
        llama_cpp.llama_memory_seq_rm(memory, -1, reuse, -1)
        for s in range(1, self.max_sequences):
            llama_cpp.llama_memory_seq_rm(memory, s, -1, -1)
        for s in range(1, n):
            llama_cpp.llama_memory_seq_cp(memory, 0, s, 0, reuse)
        return reuse

    def generate(self, prompts: list[list[int]], schemas: list[dict[str, Any] | None],
                 max_tokens: list[int], keep_prefix: bool = False,
                 until: Callable[[str], str | None] | None = None) -> list[Generated]:
        """Answers to ``prompts`` (token lists), each under its JSON schema and ``max_tokens``.
        ``keep_prefix``: reuse what the previous call's shared prefix has in common with this one's
        (a warm prompt cache); otherwise every call starts from an empty context. ``until(text)``,
        asked whenever an answer closes a JSON object, may end that answer early: it returns the
        answer's final text (finish reason ``repeat``), or None to go on."""
        import llama_cpp
        from llama_cpp.llama_grammar import LlamaGrammar

        n = len(prompts)
        if not 0 < n <= self.max_sequences:
            raise ValueError(f"between 1 and {self.max_sequences} prompts at a time, got {n}")
        shared = _common_prefix(prompts) if n > 1 else len(prompts[0]) - 1
        shared = min(shared, min(len(p) for p in prompts) - 1)  # every sequence keeps a token of its own
        if not keep_prefix:
            self._prefix = []
        reuse = self._keep(prompts[0][:shared], n)
        self._prefix = list(prompts[0][:shared])
        everyone = tuple(range(n))
        entries: list[tuple[int, int, tuple[int, ...], bool]] = [
            (t, i, everyone, False) for i, t in enumerate(prompts[0][:shared]) if i >= reuse]
        last: list[tuple[int, int]] = []  # (sequence, index in entries) of each prompt's last token
        for s, p in enumerate(prompts):
            for i in range(shared, len(p)):
                entries.append((p[i], i, (s,), i == len(p) - 1))
            last.append((s, len(entries) - 1))
        logits: dict[int, np.ndarray] = {}
        for start in range(0, len(entries), self.n_batch):
            chunk = entries[start:start + self.n_batch]
            self._decode(chunk)
            for s, index in last:
                if start <= index < start + len(chunk):
                    logits[s] = self._logits(index - start)
        grammars = [llama_cpp.llama_sampler_init_grammar(self.vocab, g._grammar.encode(), g._root.encode())
                    if (g := _grammar(LlamaGrammar, schema)) is not None else None for schema in schemas]
        try:
            out: list[list[int]] = [[] for _ in range(n)]
            final: dict[int, str] = {}
            reason = ["length"] * n
            position = [len(p) for p in prompts]
            live = list(range(n))
            while live:
                step = []
                for s in list(live):
                    token = self._pick(grammars[s], logits[s])
                    if llama_cpp.llama_vocab_is_eog(self.vocab, token):
                        reason[s] = "stop"
                        live.remove(s)
                        continue
                    if grammars[s] is not None:
                        llama_cpp.llama_sampler_accept(grammars[s], token)
                    out[s].append(token)
                    if until is not None and self._closes(token) and (text := until(self._text(out[s]))) is not None:
                        final[s], reason[s] = text, "repeat"
                        live.remove(s)
                        continue
                    if len(out[s]) >= max_tokens[s]:
                        live.remove(s)
                        continue
                    step.append((s, token))
                if not step:
                    break
                self._decode([(token, position[s], (s,), True) for s, token in step])
                for i, (s, _) in enumerate(step):
                    position[s] += 1
                    logits[s] = self._logits(i)
        finally:
            for g in grammars:
                if g is not None:
                    llama_cpp.llama_sampler_free(g)
        return [Generated(final.get(s) or self._text(out[s]), len(prompts[s]) - (reuse if s == 0 else shared),
                          len(out[s]), reason[s]) for s in range(n)]

    def _text(self, tokens: list[int]) -> str:
        return self.llama.detokenize(tokens).decode("utf-8", errors="ignore")

    def _closes(self, token: int) -> bool:
        """Whether ``token``'s text closes a JSON object."""
        if token not in self._closing:
            self._closing[token] = "}" in self._text([token])
        return self._closing[token]


def _grammar(cls: Any, schema: dict[str, Any] | None) -> Any:
    return None if schema is None else cls.from_json_schema(json.dumps(schema), verbose=False)


def _common_prefix(prompts: list[list[int]]) -> int:
    first = prompts[0]
    n = min(len(p) for p in prompts)
    for i in range(n):
        if any(p[i] != first[i] for p in prompts[1:]):
            return i
    return n
