"""Input records into documents to run, or rejections with their reasons: the main job's gate.

:class:`Intake` sees the corpus's records one at a time and decides each: *run* it, *reject* it
(bad input: a failed document whose reason names the file and position), skip it as an exact
*duplicate* (same id, same text), or skip it as *done* (extracted before in this run, with the
same text). The same rules serve the strict pre-pass (the whole input checked before any call)
and the run itself, so they cannot disagree.

Ids. A record's row is stored under the id it gave whenever the store can hold it, usable or not:
a record refused for a control character or a line break in its id, or a blank id, is failed
under that very id, so every record is found by its own id. A record without an id (missing,
empty, not a string or an integer), or whose id the store cannot hold (longer than the column, an
unpaired surrogate) or that another record of the input already took, is stored under a generated
id ``bad-input:<n>``, ``n`` its number in the corpus, its reason quoting the id it gave. Real ids
that start with ``bad-input:`` are refused (under a generated id), so generated ids never collide
with a real document.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from toolkit.core import Document
from toolkit.corpora import BadRecord, Record, has_surrogates, key_problem, quoted
from toolkit.store import MAX_ID_CHARS

GENERATED_PREFIX = "bad-input:"
Verdict = Literal["run", "reject", "duplicate", "done"]


def text_digest(text: str) -> str:
    """sha256 of a document's text (how a resumed run knows the text did not change)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass
class Decision:
    verdict: Verdict
    id: str
    reason: str | None = None  # for rejections: "bad input: <where>: <why>"
    source: str | None = None
    tokens: int | None = None
    digest: str | None = None
    document: Document | None = None

    def runnable(self) -> tuple[Document, int]:
        """A ``run`` decision's document and its tokens (every ``run`` decision has both)."""
        if self.document is None or self.tokens is None:
            raise ValueError(f"document {self.id!r}: a {self.verdict!r} decision has nothing to run")
        return self.document, self.tokens


@dataclass
class Intake:
    """Decides records in corpus order (see the module docstring). ``room``: the most text tokens
    a document may have (``count(text)`` counts them); ``done``: ids extracted before, with the
    digest of their text (None when an older version did not record it: taken as unchanged)."""

    corpus: str
    count: Callable[[str], int]
    room: int
    budget: int
    done: dict[str, str | None] = field(default_factory=dict)
    read: int = 0
    duplicates: int = 0
    bad_records: int = 0
    oversize: int = 0
    changed: int = 0  # extracted before, but their text changed: extracted again
    skipped_done: int = 0
    _seen: dict[str, str] = field(default_factory=dict)  # id -> digest of its text ("" for a bad record)

    def decide(self, item: Record) -> Decision:
        self.read += 1
        if isinstance(item, BadRecord):
            return self._reject(item.id, item.message(), f"{item.source}:{item.line}")
        where = f"{self.corpus}: record {self.read}"
        problem = self._id_problem(item.id)
        if problem is not None:
            return self._reject(item.id, f"{where}: {problem}", where)
        digest = text_digest(item.text)
        previous = self._seen.get(item.id)
        if previous is not None:
            if previous == digest:
                self.duplicates += 1
                return Decision("duplicate", item.id)
            return self._reject(None, f"{where}: id {quoted(item.id)} already used for a different text", where)
        self._seen[item.id] = digest
        if item.id in self.done:
            before = self.done[item.id]
            if before is None or before == digest:
                self.skipped_done += 1
                return Decision("done", item.id)
            self.changed += 1
        tokens = self.count(item.text)
        if tokens > self.room:
            self.oversize += 1
            return self._reject(item.id, f"{self.corpus}: document {item.id!r} has {tokens} tokens; the budget of "
                                         f"{self.budget} leaves {self.room} per document", None, tokens, digest,
                                own=True)
        return Decision("run", item.id, tokens=tokens, digest=digest, document=item)

    def _id_problem(self, doc_id: str) -> str | None:
        if len(doc_id) > MAX_ID_CHARS:
            return f"id longer than {MAX_ID_CHARS} characters ({quoted(doc_id, 40)})"
        if doc_id.startswith(GENERATED_PREFIX):
            return f"id {quoted(doc_id)}: ids starting with {GENERATED_PREFIX!r} are reserved for records without a " \
                   "usable id"
        problem = key_problem(doc_id)
        return f"id {quoted(doc_id)} has {problem}" if problem else None

    def _storable(self, doc_id: str | None) -> bool:
        """Whether a rejected record's row can keep ``doc_id``, the id it gave: one the store holds
        (not too long, no unpaired surrogate), not reserved, not taken by another record."""
        return doc_id is not None and len(doc_id) <= MAX_ID_CHARS and not doc_id.startswith(GENERATED_PREFIX) \
            and not has_surrogates(doc_id) and doc_id not in self._seen

    def _reject(self, doc_id: str | None, reason: str, source: str | None, tokens: int | None = None,
                digest: str | None = None, own: bool = False) -> Decision:
        """A failed document; ``own``: ``doc_id`` is already this record's (an oversize document)."""
        self.bad_records += not own
        if doc_id is None or not (own or self._storable(doc_id)):  # own: an oversize document's id, a str
            if doc_id is not None and doc_id in self._seen:
                reason += f" (its id {quoted(doc_id)} is taken by an earlier record)"
            doc_id = f"{GENERATED_PREFIX}{self.read}"
        self._seen.setdefault(doc_id, "")
        return Decision("reject", doc_id, f"bad input: {reason}", source, tokens, digest)
