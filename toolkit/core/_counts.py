"""A run's counts as one value type that adds up: what the calls did and what validation kept.

Every figure that is a count lives here once. A call's record carries the counts of that call
(:class:`~toolkit.execution._metrics.AttemptRecord`), a run's counts are the sum of its calls', and the
edges flatten them: a column each in the attempts frame and the store's attempts table, a key
each in run summaries and evaluation configurations. Adding a counter is adding a field here
(and incrementing it where it is measured); every edge picks it up from :data:`FIELDS`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(slots=True)
class Counts:
    """Counts of one call, or summed over many (``a + b``). Validation fills the reply's part."""

    calls: int = 0
    retries: int = 0  # calls that failed with an error a retry can cure
    rate_limited: int = 0  # calls answered 429 (the account's state: not billed, not a batch's attempt)
    splits: int = 0  # batches split in halves after their last attempt (or at once: context length)
    requeued: int = 0  # documents re-sent because a reply left them out
    extra_ids: int = 0  # ids in replies that were not asked for (dropped)
    documents_ok: int = 0  # documents a reply answered
    budget_tokens: int = 0  # what the rate limiter charged
    usage_reports: int = 0  # calls whose token usage the model reported
    tokens_in: int = 0  # as reported by the model (see usage_reports)
    tokens_out: int = 0
    cached_tokens: int = 0  # of tokens_in, read from the provider's prompt cache (billed at its price)
    entities: int = 0  # kept: grounded in their own document
    repaired: int = 0  # replies whose JSON had to be repaired
    dropped: int = 0  # malformed entity, type not asked for, mention too long
    duplicates: int = 0  # same text and type twice in one document
    ungrounded: int = 0  # text occurs in no document of the batch
    leaks: int = 0  # text occurs only in another document of the batch
    dropped_relationships: int = 0
    unknown_ids: int = 0  # records for ids that were not asked for
    duplicate_records: int = 0
    malformed_records: int = 0  # records without an id or a list of entities
    missing_ids: int = 0  # asked documents without a usable record
    loops_ended: int = 0  # one-document answers ended at a greedy loop (the parallel layout's guard)
    pass_calls: int = 0  # LM calls of the passes after the first (ExtractionSettings.passes)
    pass_entities: int = 0  # entities those passes added (new to their document), of ``entities``
    abbreviations: int = 0  # entities added as the other form of an abbreviation their document defines

    def __add__(self, other: Counts) -> Counts:
        return Counts(*(getattr(self, name) + getattr(other, name) for name in FIELDS))

    def __sub__(self, other: Counts) -> Counts:
        """What is left of these counts without ``other`` (a part of them)."""
        return Counts(*(getattr(self, name) - getattr(other, name) for name in FIELDS))

    @property
    def grounded_rate(self) -> float | None:
        """Kept entities among those judged (kept, ungrounded, leaked); None when none was judged."""
        judged = self.entities + self.ungrounded + self.leaks
        return self.entities / judged if judged else None

    def to_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in FIELDS}

    @classmethod
    def total(cls, parts: Iterable[Counts]) -> Counts:
        """The sum of ``parts`` (an empty sum is all zeros)."""
        return sum(parts, cls())


FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Counts))
"""The names of the counts, in declaration order (the columns and keys every edge writes)."""
