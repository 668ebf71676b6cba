"""Where the parallel decoder's sequences live in llama.cpp, and which CPU kernels compute them.

:class:`SharedKV` (``exact=False``, ``local:fast``): one context over a unified KV cache; the
prompts' common prefix is evaluated once into cells every sequence shares, everything else in
batches of up to 512 tokens. A sequence's numbers depend on what it is batched with, so a greedy
answer can change where two tokens nearly tie.

:class:`ExactKV` (``exact=True``, the default): every token of a sequence gets the same arithmetic
in a batch as alone, so its answer is the same token for token. What llama.cpp's CPU backend
(llama-cpp-python 0.3.36) makes depend on the batch, each measured bit for bit on Qwen2.5-1.5B
(the models it holds for, and why: :mod:`toolkit.lm._exactness`):

* quantised matmuls: below :data:`MIN_ROWS` rows a dot product per row, from it a tiled kernel
  (``GGML_CPU_TILED_MM``) whose sums round differently; the last layer after attention and the
  output head run on the rows that ask for logits, so that count counts too;
* flash attention, per sequence and batch: :data:`TILE_Q` or more query rows of a sequence take a
  tiled kernel (a row's sums depend on where its cells are, not on the other rows), fewer a kernel
  per row (its sums depend only on the order of the cells it sees), and one query row of one
  sequence over 512 or more cells is split across threads (its sums depend on the cache's size);
* a unified cache puts other sequences' cells among a sequence's own, at other places than alone;
* llama.cpp splits a batch over several KV streams into pieces with the same number of tokens of
  each sequence, and the repacked weights (``use_extra_bufts``) take a kernel by a row's place.

So a prompt, its last token apart, is evaluated in a one-stream context whose cells lie as they
would alone: the shared prefix once (kept between calls as the prompt cache), then each prompt's
own tokens after it, in pieces of at least :data:`TILE_Q` rows (padded), where the tiled attention
gives a row the same value whatever the piece. The cells are then copied (not recomputed) to a
unified decode context, where every later token, each prompt's last first, is decoded in calls of
:data:`MIN_ROWS` to :data:`TILE_Q` - 1 rows (padded with a throwaway sequence), at least
:data:`MIN_ROWS` of them asking for logits: always the tiled matmul and the attention per row,
which sees a sequence's cells in their order. The price is that no decode call is cheaper than a
tiled matmul of 8 rows (about 0.14 s for the 1.5B model on 2 cores, against 0.035 s for one row),
which one document per call pays at every step, and a prompt call per document.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

from toolkit.lm._llamacpp import stderr_silenced

MIN_ROWS = 8  # rows from which the CPU matmul of K-quants is the tiled kernel
TILE_Q = 64  # a sequence's query rows from which flash attention is the tiled kernel (GGML_FA_TILE_Q)
PIECE = 512  # prompt rows per call at most (llama.cpp's n_ubatch)
PAD_TOKEN = 0  # what padding rows hold (their values are never used)

Row = tuple[int, int, tuple[int, ...], bool]  # token, position, sequences, wants logits
Item = tuple[int, list[int], int]  # sequence, its new tokens, the position of the first


class Context:
    """A llama.cpp context on ``llama``'s weights with one reusable batch."""

    def __init__(self, llama: Any, n_ctx: int, n_batch: int, n_seq: int, unified: bool, flash: int) -> None:
        import llama_cpp
        from llama_cpp import _internals

        params = llama_cpp.llama_context_default_params()
        params.n_ctx, params.n_seq_max, params.kv_unified, params.flash_attn_type = n_ctx, n_seq, unified, flash
        params.n_batch = params.n_ubatch = n_batch
        params.n_threads = params.n_threads_batch = llama.context_params.n_threads
        self.n_ctx, self.n_batch, self.n_vocab = n_ctx, n_batch, llama.n_vocab()
        with stderr_silenced():  # a multi-sequence cache larger than one sequence's trained context is a warning
            self.ctx = _internals.LlamaContext(model=llama._model, params=params, verbose=False)
        self.batch = llama_cpp.llama_batch_init(n_batch, 0, n_seq)
        self.memory = llama_cpp.llama_get_memory(self.ctx.ctx)

    def decode(self, rows: list[Row]) -> list[np.ndarray]:
        """``rows`` (at most ``n_batch``) in one ``llama_decode``; the logits of those that ask."""
        import llama_cpp

        b = self.batch
        b.n_tokens = len(rows)
        for i, (token, pos, seqs, logits) in enumerate(rows):
            b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = token, pos, len(seqs), logits
            for j, s in enumerate(seqs):
                b.seq_id[i][j] = s
        if llama_cpp.llama_decode(self.ctx.ctx, b) != 0:
            raise RuntimeError("llama_decode failed (context full?)")
        return [np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self.ctx.ctx, i), shape=(self.n_vocab,)).copy()
                for i, row in enumerate(rows) if row[3]]

    def decode_all(self, rows: list[Row]) -> list[np.ndarray]:
        """``rows`` in calls of ``n_batch``."""
        n = self.n_batch
        return [out for start in range(0, len(rows), n) for out in self.decode(rows[start:start + n])]

    def remove(self, seq: int, start: int = -1) -> None:
        """Drop sequence ``seq``'s cells from position ``start`` on (``seq`` -1: every sequence's)."""
        import llama_cpp

        llama_cpp.llama_memory_seq_rm(self.memory, seq, start, -1)

    def clear(self) -> None:
        import llama_cpp

        llama_cpp.llama_memory_clear(self.memory, True)

    def close(self) -> None:
        import llama_cpp

        if self.batch is not None:
            llama_cpp.llama_batch_free(self.batch)
            self.batch = None
        self.ctx.close()


class _KV:
    """What both layouts share: the prompt cache's prefix, kept in sequence 0 of ``_prefix_ctx``."""

    _prefix_ctx: Any  # Context

    def __init__(self) -> None:
        self._prefix: list[int] = []

    def _keep(self, prefix: list[int], keep: bool) -> int:
        """Keep the longest part of the previous call's prefix that starts ``prefix`` (if ``keep``),
        drop everything else; the number of tokens kept."""
        reuse = common_prefix([self._prefix, prefix]) if keep and self._prefix else 0
        if reuse:
            self._prefix_ctx.remove(-1, reuse)
        else:
            self._prefix_ctx.clear()
        self._prefix = list(prefix)
        return reuse


class SharedKV(_KV):
    """One context, a unified cache: the shared prefix's cells belong to every sequence."""

    def __init__(self, llama: Any, max_sequences: int, n_ctx: int) -> None:
        super().__init__()
        self.max_sequences = max_sequences
        self._prefix_ctx = Context(llama, n_ctx, PIECE, max_sequences, unified=True, flash=-1)

    def prompt(self, prompts: list[list[int]], shared: int, keep: bool,
               room: list[int]) -> tuple[list[np.ndarray], int]:
        """``prompts`` evaluated, their first ``shared`` tokens once (``keep``: reusing what the
        cache holds of them); the logits after each prompt, and the prefix tokens reused."""
        import llama_cpp

        ctx = self._prefix_ctx
        reuse = self._keep(prompts[0][:shared], keep)
        for s in range(1, self.max_sequences):
            ctx.remove(s)
        for s in range(1, len(prompts)):
            llama_cpp.llama_memory_seq_cp(ctx.memory, 0, s, 0, reuse)
        everyone = tuple(range(len(prompts)))
        rows: list[Row] = [(t, i, everyone, False) for i, t in enumerate(prompts[0][:shared]) if i >= reuse]
        for s, p in enumerate(prompts):
            rows.extend((p[i], i, (s,), i == len(p) - 1) for i in range(shared, len(p)))
        return ctx.decode_all(rows), reuse

    def step(self, items: list[Item]) -> list[np.ndarray]:
        """Each item's tokens decoded; the logits after each item's last token."""
        return self._prefix_ctx.decode_all(_rows(items))

    def close(self) -> None:
        self._prefix_ctx.close()


class ExactKV(_KV):
    """Prompts in a one-stream context laid out as alone, their cells moved to a unified decode
    context where every call has the same kernels (see the module docstring)."""

    def __init__(self, llama: Any, max_sequences: int, n_ctx: int) -> None:
        import llama_cpp

        if llama.model_params.use_extra_bufts:  # repacked weights: a row's kernel depends on its place
            raise ValueError("exact decoding needs llama.cpp's plain kernels: load the weights without repacking")
        model = llama._model.model
        if llama_cpp.llama_model_is_recurrent(model) or llama_cpp.llama_model_is_hybrid(model):
            raise ValueError("exact decoding needs a KV cache: this model keeps a recurrent state")
        super().__init__()
        self.llama, self.max_sequences, self.n_ctx = llama, max_sequences, n_ctx
        self._prefix_ctx = None  # one stream, sized for the longest prompt
        self._ctx: Any = None  # the decode context, sized for the call
        self._cells = (ctypes.c_uint8 * 0)()  # a sequence's cells on their way

    def _sized(self, ctx: Context | None, n_ctx: int, n_batch: int, n_seq: int) -> Context:
        """``ctx`` if it has ``n_ctx`` cells, else a new context with that many (rounded up to 4096)."""
        import llama_cpp

        if ctx is not None and ctx.n_ctx >= n_ctx:
            return ctx
        if ctx is not None:
            ctx.close()
        return Context(self.llama, -(-n_ctx // 4096) * 4096, n_batch, n_seq, unified=n_seq > 1,
                       flash=llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED)

    def prompt(self, prompts: list[list[int]], shared: int, keep: bool,
               room: list[int]) -> tuple[list[np.ndarray], int]:
        """As :meth:`SharedKV.prompt`; ``room``: the tokens each answer may add."""
        ctx = self._sized(self._prefix_ctx, max(len(p) for p in prompts) + TILE_Q, PIECE, 1)
        if ctx is not self._prefix_ctx:
            self._prefix_ctx, self._prefix = ctx, []
        need = sum(len(p) + r for p, r in zip(prompts, room)) + TILE_Q
        self._ctx = self._sized(self._ctx, max(self.n_ctx, need), TILE_Q, self.max_sequences + 1)
        self._ctx.clear()
        reuse = self._keep(prompts[0][:shared], keep)
        self._evaluate(prompts[0], reuse, shared)
        for s, p in enumerate(prompts):
            self._evaluate(p, shared, len(p) - 1)
            self._move(s)
            ctx.remove(0, shared)
        return self.step([(s, p[-1:], len(p) - 1) for s, p in enumerate(prompts)]), reuse

    def _evaluate(self, tokens: list[int], start: int, end: int) -> None:
        """``tokens[start:end]`` into the prompt context's sequence 0, in pieces of :data:`TILE_Q`
        to :data:`PIECE` rows (padded after the tokens, the padding then dropped)."""
        count = -(-(end - start) // PIECE)
        for k in range(count):
            a, b = start + (end - start) * k // count, start + (end - start) * (k + 1) // count
            pad = max(0, TILE_Q - (b - a))
            self._prefix_ctx.decode([(t, i, (0,), False) for i, t in enumerate(tokens[a:b], a)]
                                    + [(PAD_TOKEN, b + i, (0,), False) for i in range(pad)])
            if pad:
                self._prefix_ctx.remove(0, b)

    def _move(self, seq: int) -> None:
        """The prompt context's sequence 0 copied to the decode context's sequence ``seq``."""
        import llama_cpp

        source = self._prefix_ctx.ctx.ctx
        size = llama_cpp.llama_state_seq_get_size(source, 0)
        if len(self._cells) < size:
            self._cells = (ctypes.c_uint8 * size)()
        if llama_cpp.llama_state_seq_get_data(source, self._cells, size, 0) != size or \
                llama_cpp.llama_state_seq_set_data(self._ctx.ctx.ctx, self._cells, size, seq) != size:
            raise RuntimeError("could not move a prompt's cells to the decode context")

    def step(self, items: list[Item]) -> list[np.ndarray]:
        """Each item's tokens decoded in calls of :data:`MIN_ROWS` to :data:`TILE_Q` - 1 rows (the
        throwaway sequence pads), of which none or at least :data:`MIN_ROWS` ask for logits; the
        logits after each item's last token."""
        rows, pad = _rows(items), self.max_sequences
        out: list[np.ndarray] = []
        for start in range(0, len(rows), TILE_Q - 1):
            call = rows[start:start + TILE_Q - 1]
            call += [(PAD_TOKEN, i, (pad,), False) for i in range(MIN_ROWS - len(call))]
            wanted = [row[3] for row in call]
            extra = MIN_ROWS - sum(wanted) if any(wanted) else 0
            for i, row in enumerate(call):
                if extra > 0 and not row[3]:
                    call[i], extra = (*row[:3], True), extra - 1
            logits = self._ctx.decode(call)  # of every row that asks, the padding's included
            out += [values for values, want in zip(logits, [w for w, row in zip(wanted, call) if row[3]]) if want]
            self._ctx.remove(pad)
        return out

    def close(self) -> None:
        for ctx in (self._prefix_ctx, self._ctx):
            if ctx is not None:
                ctx.close()
        self._prefix_ctx = self._ctx = None


def _rows(items: list[Item]) -> list[Row]:
    """A decode step's rows: each item's tokens, the logits asked after its last."""
    return [(t, pos + k, (s,), k == len(new) - 1) for s, new, pos in items for k, t in enumerate(new)]


def common_prefix(prompts: list[list[int]]) -> int:
    """The number of leading tokens all ``prompts`` share."""
    first = prompts[0]
    n = min(len(p) for p in prompts)
    for i in range(n):
        if any(p[i] != first[i] for p in prompts[1:]):
            return i
    return n
