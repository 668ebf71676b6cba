"""Token-budget packing of documents into batches.

The budget of a batch counts everything the call consumes: the instruction prompt once, then for
every document its text, its framing (id, separators) and the output reserved for its entities.

* ``BatchQueue`` is the streaming, order-keeping packer of the original design (FIFO on a deque).
* ``Packer`` packs a whole corpus with ``fifo`` (order kept, next-fit) or ``ffd`` (first-fit-
  decreasing: fewer, fuller batches). ``ffd`` never returns more batches than ``fifo``: in the rare
  input where the order-kept packing needs fewer batches, that packing is returned instead.

A document whose own cost exceeds the budget gets a batch of its own flagged ``oversize``: it is
never dropped or truncated here; what to do with it (split, skip, send anyway) is the caller's call.
"""

from __future__ import annotations

import dataclasses
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from toolkit.core import STRATEGIES, Document, DocumentBatch, Strategy, check_token_count
from toolkit.packing._tokens import get_counter

if TYPE_CHECKING:
    import polars as pl


@dataclass(frozen=True)
class PackingSettings:
    """How batches are sized. Serializable (``asdict``) so every result records its settings.

    ``prompt_tokens`` and ``output_tokens_per_doc`` are reserves: the extraction module replaces
    them with the measured size of its prompt and the output it allows per document.
    """

    token_budget: int = 8192
    max_docs: int = 10
    min_docs: int = 1
    prompt_tokens: int = 600
    doc_overhead_tokens: int = 16
    output_tokens_per_doc: int = 256
    strategy: Strategy = "fifo"
    model: str = "gpt-3.5-turbo"

    def __post_init__(self) -> None:
        if self.token_budget <= 0:
            raise ValueError(f"token_budget must be > 0, got {self.token_budget}")
        if self.max_docs < 1:
            raise ValueError(f"max_docs must be >= 1, got {self.max_docs}")
        if not 1 <= self.min_docs <= self.max_docs:
            raise ValueError(f"min_docs must be between 1 and max_docs ({self.max_docs}), got {self.min_docs}")
        if min(self.prompt_tokens, self.doc_overhead_tokens, self.output_tokens_per_doc) < 0:
            raise ValueError("token reserves must be >= 0")
        if self.prompt_tokens + self.doc_overhead_tokens + self.output_tokens_per_doc >= self.token_budget:
            raise ValueError(
                f"token_budget {self.token_budget} leaves no room for text after the prompt "
                f"({self.prompt_tokens}) and per-document reserves "
                f"({self.doc_overhead_tokens + self.output_tokens_per_doc})"
            )
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")

    @property
    def per_document_reserve(self) -> int:
        return self.doc_overhead_tokens + self.output_tokens_per_doc

    @property
    def capacity(self) -> int:
        """Budget left for documents once the prompt is reserved."""
        return self.token_budget - self.prompt_tokens

    def cost(self, token_count: int) -> int:
        """Budget one document claims: its text plus framing plus reserved output."""
        return token_count + self.per_document_reserve

    def replace(self, **changes: Any) -> PackingSettings:
        return dataclasses.replace(self, **changes)

    def new_batch(self) -> DocumentBatch:
        return DocumentBatch(base_reserve=self.prompt_tokens, per_document_reserve=self.per_document_reserve)


class BatchQueue:
    """FIFO queue of ``(document, token_count)``; ``get_next_batch`` takes documents in order while
    they fit the budget and ``max_docs``.

    With ``min_docs`` > 1 the queue holds a batch back until ``min_docs`` documents are queued, unless
    :meth:`close` says no more documents will come (then it drains everything).
    """

    def __init__(self, token_budget: int = 8192, settings: PackingSettings | None = None) -> None:
        self.settings = settings or PackingSettings(token_budget=token_budget)
        self._queue: deque[tuple[Document | str, int]] = deque()
        self.closed = False

    def __len__(self) -> int:
        return len(self._queue)

    def add_document(self, document: Document | str, token_count: int) -> None:
        if self.closed:
            raise RuntimeError("queue is closed: no documents can be added")
        check_token_count(token_count)
        if not isinstance(document, (Document, str)) or not document:
            raise TypeError(f"expected a Document or a document id, got {document!r}")
        self._queue.append((document, token_count))

    def close(self) -> None:
        """No more documents will be added: remaining ones may form batches below ``min_docs``."""
        self.closed = True

    def next_batch(self, token_budget: int | None = None) -> DocumentBatch | None:
        """The next batch as a :class:`DocumentBatch`, or ``None`` if none is ready."""
        settings = self.settings
        if token_budget is not None and token_budget != settings.token_budget:
            settings = settings.replace(token_budget=token_budget)
        queue = self._queue
        if not queue or (len(queue) < settings.min_docs and not self.closed):
            return None
        batch = settings.new_batch()
        capacity, reserve, max_docs = settings.capacity, settings.per_document_reserve, settings.max_docs
        used = 0
        while queue and batch.batch_size < max_docs:
            document, tokens = queue[0]
            cost = tokens + reserve
            if used + cost > capacity:
                if batch.batch_size == 0:  # alone and still too big: its own oversize batch
                    batch.add_document(*queue.popleft())
                    batch.oversize = True
                break
            batch.add_document(*queue.popleft())
            used += cost
        return batch

    def get_next_batch(self, token_budget: int | None = None) -> list[Document | str] | None:
        """Original contract: the next batch's documents in FIFO order, ``None`` when empty."""
        batch = self.next_batch(token_budget)
        if batch is None:
            return None
        return list(batch.documents) if batch.documents else list(batch.document_ids)


def _pack_fifo(items: Sequence[tuple[Document, int]], settings: PackingSettings) -> list[DocumentBatch]:
    queue = BatchQueue(settings=settings)
    for document, tokens in items:
        queue.add_document(document, tokens)
    queue.close()
    batches = []
    while (batch := queue.next_batch()) is not None:
        batches.append(batch)
    return batches


def _pack_ffd(items: Sequence[tuple[Document, int]], settings: PackingSettings) -> list[DocumentBatch]:
    """First-fit-decreasing with a max-docs limit, O(n log n) through a max segment tree over the
    remaining capacity of open bins (a full bin's capacity is set to -1)."""
    capacity, max_docs = settings.capacity, settings.max_docs
    costs = [settings.cost(tokens) for _, tokens in items]
    order = sorted(range(len(items)), key=costs.__getitem__, reverse=True)
    oversize = [i for i in order if costs[i] > capacity]
    fitting = [i for i in order if costs[i] <= capacity]
    size = 1
    while size < max(1, len(fitting)):
        size *= 2
    tree = [-1] * (2 * size)  # leaves size..2*size-1 hold the remaining capacity of bin k
    bins: list[list[int]] = []
    for i in fitting:
        cost = costs[i]
        if tree[1] >= cost:
            node = 1
            while node < size:  # descend to the leftmost leaf with room
                node = 2 * node if tree[2 * node] >= cost else 2 * node + 1
            k = node - size
            bins[k].append(i)
            remaining = tree[node] - cost if len(bins[k]) < max_docs else -1
        else:
            k = len(bins)
            bins.append([i])
            node = k + size
            remaining = capacity - cost if max_docs > 1 else -1
        tree[node] = remaining
        node //= 2
        while node:
            best = max(tree[2 * node], tree[2 * node + 1])
            if tree[node] == best:
                break
            tree[node] = best
            node //= 2
    batches = []
    for members in [[i] for i in oversize] + bins:
        batch = settings.new_batch()
        for i in members:
            batch.add_document(*items[i])
        batch.oversize = costs[members[0]] > capacity
        batches.append(batch)
    return batches


@dataclass
class PackResult:
    """Batches plus the figures of how they were made."""

    batches: list[DocumentBatch]
    settings: PackingSettings
    count_seconds: float
    pack_seconds: float
    strategy_used: str

    @property
    def documents(self) -> int:
        return sum(b.batch_size for b in self.batches)

    def report(self) -> dict[str, Any]:
        s = self.settings
        n = len(self.batches)
        tokens = sum(b.total_token_count for b in self.batches)
        claimed = sum(min(b.budget_tokens, s.token_budget) for b in self.batches)
        underfilled = sum(1 for b in self.batches if b.batch_size < s.min_docs and not b.oversize)
        return {
            "documents": self.documents,
            "batches": n,
            "oversize": sum(b.oversize for b in self.batches),
            "underfilled": underfilled,
            "mean_docs_per_batch": self.documents / n if n else 0.0,
            "max_docs_in_batch": max((b.batch_size for b in self.batches), default=0),
            "document_tokens": tokens,
            "fill_ratio": claimed / (n * s.token_budget) if n else 0.0,
            "count_seconds": self.count_seconds,
            "pack_seconds": self.pack_seconds,
            "tokens_per_second": tokens / self.count_seconds if self.count_seconds > 0 else None,
            "strategy": s.strategy,
            "strategy_used": self.strategy_used,
            "settings": dataclasses.asdict(s),
        }

    def to_polars(self) -> pl.DataFrame:
        import polars as pl

        return pl.DataFrame(
            {
                "batch_id": [b.batch_id for b in self.batches],
                "docs": [b.batch_size for b in self.batches],
                "document_tokens": [b.total_token_count for b in self.batches],
                "budget_tokens": [b.budget_tokens for b in self.batches],
                "fill": [b.budget_tokens / self.settings.token_budget for b in self.batches],
                "oversize": [b.oversize for b in self.batches],
                "strategy": [self.settings.strategy] * len(self.batches),
            },
            schema_overrides={"docs": pl.Int32},
        )


class Packer:
    """Packs a whole corpus under ``settings`` (sklearn-style: no work in ``__init__``)."""

    def __init__(self, settings: PackingSettings | None = None) -> None:
        self.settings = settings or PackingSettings()

    def pack(self, documents: Iterable[Document], token_counts: Sequence[int] | None = None) -> PackResult:
        """Count tokens (unless ``token_counts`` is given) and pack. Every document lands in exactly
        one batch."""
        documents = list(documents)
        ids = [d.id for d in documents]
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise ValueError(f"duplicate document id {dup!r}: ids must be unique (see corpora.dedupe)")
        if token_counts is None:
            counter = get_counter(self.settings.model)  # loads once, before the clock starts
            start = time.perf_counter()
            token_counts = counter.count_many(d.text for d in documents)
        else:
            start = time.perf_counter()
            if len(token_counts) != len(documents):
                raise ValueError(f"{len(token_counts)} token counts for {len(documents)} documents")
        count_seconds = time.perf_counter() - start
        items = list(zip(documents, token_counts))
        start = time.perf_counter()
        batches = _pack_fifo(items, self.settings)
        used = "fifo"
        if self.settings.strategy == "ffd":
            ffd = _pack_ffd(items, self.settings)
            if len(ffd) <= len(batches):
                batches, used = ffd, "ffd"
        pack_seconds = time.perf_counter() - start
        return PackResult(batches, self.settings, count_seconds, pack_seconds, used)


def pack(documents: Iterable[Document], settings: PackingSettings | None = None, **changes: Any) -> PackResult:
    """Shorthand: ``pack(docs, strategy="ffd", token_budget=4096)``."""
    settings = (settings or PackingSettings()).replace(**changes)
    return Packer(settings).pack(documents)
