"""How many output tokens to allow a call: :class:`OutputSizer`, learned from this run's replies."""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Sequence

from toolkit.extraction._settings import ExtractionSettings


class OutputSizer:
    """The output tokens to allow a call on ``n`` documents, learned from the replies of this run.

    Until ``warmup`` replies are seen it allows ``settings.max_tokens(n)`` (the ceiling).
    Then ``n*mu + z*sigma*sqrt(n)``, where ``mu`` and ``sigma`` are the mean and spread of one
    document's output, estimated from the last ``window`` replies of any size (a reply on ``n``
    documents has mean ``n*mu`` and variance ``n*sigma**2``): a batch's total varies much less than
    one document's, so packed calls need a smaller allowance per document than single ones. With
    ``z = 3`` a reply is cut off about once in a few hundred calls (then its missing documents are
    re-sent). A cut-off reply counts as needing the ceiling, so the allowance grows back at once.
    The allowance is ``max_tokens`` and what a provider's tokens-per-minute limit counts, whatever
    is actually written: a tight one is throughput and money.

    ``enabled`` (default ``settings.adaptive_output``, which is on by default on every backend: where a
    provider charges ``max_tokens`` against its limit at admission, as OpenAI does, an oversized one
    halves the documents a minute allows): False allows the ceiling always."""

    def __init__(self, settings: ExtractionSettings, warmup: int = 5, window: int = 50, floor: int = 16,
                 z: float = 3.0, enabled: bool | None = None) -> None:
        self.settings = settings
        self.ceiling = settings.output_tokens_per_doc
        self.enabled = settings.adaptive_output if enabled is None else enabled
        self.warmup, self.floor, self.z = warmup, floor, z
        self._recent: deque[tuple[int, float]] = deque(maxlen=window)  # (documents, output tokens)
        self._lock = threading.Lock()

    def __deepcopy__(self, memo: dict[int, object]) -> OutputSizer:
        """A twin with what this one has seen and a lock of its own (DSPy copies modules)."""
        twin = OutputSizer(self.settings, self.warmup, self._recent.maxlen or 50, self.floor, self.z, self.enabled)
        twin._recent.extend(self._recent)
        return twin

    def observe(self, documents: int, output_tokens: int | None, truncated: bool) -> None:
        if output_tokens is None or documents < 1:
            return
        with self._lock:
            self._recent.append((documents, float(documents * self.ceiling if truncated else output_tokens)))

    def per_document(self) -> tuple[float, float] | None:
        """(mean, standard deviation) of one document's output tokens; None before ``warmup``."""
        with self._lock:
            if not self.enabled or len(self._recent) < self.warmup:
                return None
            return output_per_document(list(self._recent))

    def allowance(self, n: int) -> int:
        """``max_tokens`` of a call on ``n`` documents (measured replies include the reply's frame)."""
        estimate = self.per_document()
        if estimate is None:
            return self.settings.max_tokens(n)
        return output_allowance(n, *estimate, self.settings, self.z, self.floor)


def output_per_document(replies: Sequence[tuple[int, float]]) -> tuple[float, float]:
    """(mean, standard deviation) of one document's output tokens, from ``(documents, output
    tokens)`` of replies of any size: a reply on ``n`` documents has mean ``n*mu``, variance ``n*sigma**2``."""
    docs = sum(n for n, _ in replies)
    if not docs:
        raise ValueError("no replies to measure")
    mu = sum(t for _, t in replies) / docs
    variance = sum((t - n * mu) ** 2 / n for n, t in replies) / max(1, len(replies) - 1)
    return mu, math.sqrt(variance)


def output_allowance(n: int, mu: float, sigma: float, settings: ExtractionSettings, z: float = 3.0,
                     floor: int = 16) -> int:
    """``n*mu + z*sigma*sqrt(n)`` output tokens for a call on ``n`` documents, within
    ``[n*floor, settings.max_tokens(n)]``."""
    return max(n * floor, min(settings.max_tokens(n), math.ceil(n * mu + z * sigma * math.sqrt(n))))
