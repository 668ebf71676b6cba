"""Input records into documents to run, or rejections with their reasons: the main job's gate.

:class:`Intake` sees the corpus's records one at a time and decides each: *run* it, *reject* it
(bad input: a failed document whose reason names the file and position), skip it as an exact
*duplicate* (same id, same text), or skip it as *done* (extracted before in this run, with the
same text). The same rules serve the strict pre-pass (the whole input checked before any call)
and the run itself, so they cannot disagree.

Ids. A record keeps its own id whenever it is usable. A record without one (or whose id is taken,
too long, or unstorable) is stored under a generated id ``bad-input:<n>``, ``n`` its number in the
corpus. Real ids that start with ``bad-input:`` are refused, so generated ids never collide
with a real document.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from toolkit.corpora import BadRecord, Record
from toolkit.corpora.readers import key_problem
from toolkit.documents import Document
from toolkit.store.dialect import MAX_ID_CHARS

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
            return self._reject(None, f"{where}: {problem}", where)
        digest = text_digest(item.text)
        previous = self._seen.get(item.id)
        if previous is not None:
            if previous == digest:
                self.duplicates += 1
                return Decision("duplicate", item.id)
            return self._reject(None, f"{where}: id {item.id!r} already used for a different text", where)
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
            return f"id longer than {MAX_ID_CHARS} characters ({doc_id[:40]!r}...)"
        if doc_id.startswith(GENERATED_PREFIX):
            return f"ids starting with {GENERATED_PREFIX!r} are reserved for records without a usable id"
        problem = key_problem(doc_id)
        return f"id has {problem}" if problem else None

    def _reject(self, doc_id: str | None, reason: str, source: str | None, tokens: int | None = None,
                digest: str | None = None, own: bool = False) -> Decision:
        """A failed document; ``own``: ``doc_id`` is already this record's (an oversize document)."""
        self.bad_records += not own
        if not own and (doc_id is None or doc_id in self._seen or self._id_problem(doc_id) is not None):
            doc_id = f"{GENERATED_PREFIX}{self.read}"
        self._seen.setdefault(doc_id, "")
        return Decision("reject", doc_id, f"bad input: {reason}", source, tokens, digest)
