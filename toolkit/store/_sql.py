"""The store: runs (:mod:`toolkit.store._runs`), documents with their entities and relationships,
and one row per call, over :class:`~toolkit.store._db.Database`.

Writes are idempotent: saving a document replaces its own rows (status, entities, relationships)
in one transaction, so re-running a document never duplicates it. Every value goes through a
parameter; nothing from a document or a model reply is ever formatted into SQL. Text that comes
from outside (reasons, errors, summaries) is redacted (:mod:`toolkit.core._redact`) and clipped to its
column. Database errors (a file locked longer than the busy timeout, a lost connection) surface as
:class:`StoreError`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from toolkit.core import Dropped, Entity, Relationship
from toolkit.execution import AttemptRecord
from toolkit.store._batches import BatchLedger
from toolkit.store._db import LeaseLost, StoreError, clip, now
from toolkit.store._dialect import COLUMNS, SCHEMA
from toolkit.store._runs import LEASE_SECONDS, RunBusy, RunLedger

__all__ = ["LEASE_SECONDS", "LeaseLost", "RunBusy", "SQLStore", "StoreError"]


class SQLStore(BatchLedger, RunLedger):
    """The :class:`~toolkit.store.Store` implementation (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.session_id = uuid.uuid4().hex[:12]  # attempts rows of this process: (session, seq)
        self._seq = 0
        super().__init__(*args, **kwargs)

    def statuses(self, run_id: str) -> dict[str, str]:
        rows = self._query(f"SELECT doc_id, status FROM {self._t('batchx_documents')} WHERE run_id = ?", (run_id,))
        return {r["doc_id"]: r["status"] for r in rows}

    def digests(self, run_id: str, status: str = "extracted") -> dict[str, str | None]:
        """``doc id -> sha256 of the text`` of the run's documents in ``status`` (None if unknown)."""
        rows = self._query(f"SELECT doc_id, text_sha256 FROM {self._t('batchx_documents')} WHERE run_id = ? "
                           "AND status = ?", (run_id, status))
        return {r["doc_id"]: r["text_sha256"] for r in rows}

    def mark_pending(self, run_id: str, docs: Iterable[tuple[str, int | None, str | None, str | None]]) -> None:
        """Record documents about to be processed (``(id, token_count, source, text sha256)``) as
        pending, replacing earlier rows of those documents (they were not extracted)."""
        rows = list(docs)

        def work() -> None:
            keys = [(run_id, d[0]) for d in rows]
            for table in ("batchx_entities", "batchx_relationships", "batchx_dropped", "batchx_documents"):
                self._many(f"DELETE FROM {self._t(table)} WHERE run_id = ? AND doc_id = ?", keys)
            self._many(f"INSERT INTO {self._t('batchx_documents')} (run_id, doc_id, status, token_count, source, "
                       "text_sha256, updated) VALUES (?, ?, ?, ?, ?, ?, ?)",
                       [(run_id, d, "pending", n, clip(s, "batchx_documents", "source"), h, now())
                        for d, n, s, h in rows])
        self._transaction(work, "marking documents pending", run_id)

    def save_documents(self, run_id: str, outcomes: Iterable[Any]) -> None:
        """Save finished documents (objects with ``id``, ``status``, ``reason``, ``entities``,
        ``relationships``; optional ``token_count``, ``source`` and ``digest``): each replaces its
        own rows, keeping what :meth:`mark_pending` recorded unless given anew."""
        items = list(outcomes)
        if not items:
            return
        stamp = now()
        docs = self._t("batchx_documents")

        def work() -> None:
            keys = [(run_id, o.id) for o in items]
            for table in ("batchx_entities", "batchx_relationships", "batchx_dropped"):
                self._many(f"DELETE FROM {self._t(table)} WHERE run_id = ? AND doc_id = ?", keys)
            for o in items:
                reason = clip(o.reason, "batchx_documents", "reason")
                extra = (getattr(o, "token_count", None), clip(getattr(o, "source", None), "batchx_documents",
                                                                 "source"), getattr(o, "digest", None))
                updated = self._execute(
                    f"UPDATE {docs} SET status = ?, reason = ?, updated = ?, token_count = COALESCE(?, token_count), "
                    "source = COALESCE(?, source), text_sha256 = COALESCE(?, text_sha256) WHERE run_id = ? AND "
                    "doc_id = ?", (o.status, reason, stamp, *extra, run_id, o.id)).rowcount
                if updated != 1:
                    self._execute(f"INSERT INTO {docs} (run_id, doc_id, status, reason, token_count, source, "
                                  "text_sha256, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                                  (run_id, o.id, o.status, reason, *extra, stamp))
            self._many(
                f"INSERT INTO {self._t('batchx_entities')} (run_id, doc_id, seq, mention, entity_type, start_offset, "
                "end_offset, confidence) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(run_id, o.id, i, e.text, e.type, e.start, e.end, e.confidence)
                 for o in items for i, e in enumerate(o.entities)])
            self._many(
                f"INSERT INTO {self._t('batchx_relationships')} "
                "(run_id, doc_id, seq, source_text, target_text, rel_type) VALUES (?, ?, ?, ?, ?, ?)",
                [(run_id, o.id, i, r.source, r.target, r.type) for o in items for i, r in enumerate(o.relationships)])
            self._many(
                f"INSERT INTO {self._t('batchx_dropped')} (run_id, doc_id, seq, mention, entity_type, why, found_in) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(run_id, o.id, i, d.text, d.type, d.why, d.found_in)
                 for o in items for i, d in enumerate(getattr(o, "dropped", ()))])
        self._transaction(work, "saving documents", run_id)

    def save_attempts(self, run_id: str, attempts: Iterable[AttemptRecord]) -> None:
        """One row per call: where and when, how it ended, and every count it carries."""
        names = [name for name, _ in COLUMNS["batchx_attempts"]]
        rows = []
        for a in attempts:
            self._seq += 1
            row = {**a.flat(), "run_id": run_id, "session_id": self.session_id, "seq": self._seq,
                   "n_docs": len(a.document_ids), "error": clip(a.error, "batchx_attempts", "error")}
            rows.append(tuple(row[name] for name in names))
        self._transaction(lambda: self._many(
            f"INSERT INTO {self._t('batchx_attempts')} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
            rows), "saving calls", run_id)

    def documents(self, run_id: str) -> list[dict[str, Any]]:
        return self._query(f"SELECT doc_id, status, reason, token_count, source FROM {self._t('batchx_documents')} "
                           "WHERE run_id = ? ORDER BY doc_id", (run_id,))

    def entities(self, run_id: str, doc_id: str | None = None) -> list[Entity]:
        sql = (f"SELECT doc_id, seq, mention, entity_type, start_offset, end_offset, confidence "
               f"FROM {self._t('batchx_entities')} WHERE run_id = ?")
        params: list[Any] = [run_id]
        if doc_id is not None:
            sql += " AND doc_id = ?"
            params.append(doc_id)
        rows = self._query(sql + " ORDER BY doc_id, seq", params)
        return [Entity(r["mention"], r["entity_type"], r["doc_id"], r["confidence"], r["start_offset"], r["end_offset"])
                for r in rows]

    def relationships(self, run_id: str) -> list[Relationship]:
        rows = self._query(f"SELECT doc_id, source_text, target_text, rel_type FROM {self._t('batchx_relationships')} "
                           "WHERE run_id = ? ORDER BY doc_id, seq", (run_id,))
        return [Relationship(r["source_text"], r["target_text"], r["rel_type"], r["doc_id"]) for r in rows]

    def dropped(self, run_id: str) -> list[Dropped]:
        """Mentions validation did not keep, per document (leaks name the document they are in)."""
        rows = self._query(f"SELECT doc_id, mention, entity_type, why, found_in FROM {self._t('batchx_dropped')} "
                           "WHERE run_id = ? ORDER BY doc_id, seq", (run_id,))
        return [Dropped(r["mention"], r["entity_type"], r["doc_id"], r["why"], r["found_in"]) for r in rows]

    def attempts(self, run_id: str) -> list[dict[str, Any]]:
        return self._query(f"SELECT * FROM {self._t('batchx_attempts')} WHERE run_id = ? ORDER BY session_id, seq",
                           (run_id,))

    def count(self, table: str, run_id: str) -> int:
        if table not in SCHEMA:
            raise ValueError(f"unknown table {table!r}")
        return self._query(f"SELECT COUNT(*) AS n FROM {self._t(table)} WHERE run_id = ?", (run_id,))[0]["n"]
