"""One store over any DB-API connection with ``?`` parameters (sqlite3 and ``iris.dbapi`` both).

Writes are idempotent: saving a document replaces its own rows (status, entities, relationships)
in one transaction, so re-running a document never duplicates it. Every value goes through a
parameter; nothing from a document or a model reply is ever formatted into SQL.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timezone
from typing import Any

from toolkit.documents import Entity, Relationship
from toolkit.metrics import AttemptRecord
from toolkit.store.dialect import SCHEMA, Dialect


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class SQLStore:
    """The :class:`~toolkit.store.Store` implementation (see the package docstring)."""

    def __init__(self, connect: Callable[[], Any], dialect: Dialect, url: str) -> None:
        self.dialect = dialect
        self.url = url
        self._conn = connect()
        self._lock = threading.RLock()
        self.session_id = uuid.uuid4().hex[:12]
        self._seq = 0
        self.create_schema()

    # ------------------------------------------------------------------------------- plumbing
    def _t(self, name: str) -> str:
        return self.dialect.table(name)

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        cur = self._conn.cursor()
        cur.execute(sql, tuple(params))
        return cur

    def _many(self, sql: str, rows: list[tuple]) -> None:
        if rows:
            self._conn.cursor().executemany(sql, rows)

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with self._lock:
            cur = self._execute(sql, params)
            names = [d[0].lower() for d in cur.description]
            return [dict(zip(names, row)) for row in cur.fetchall()]

    def _transaction(self, work: Callable[[], None]) -> None:
        with self._lock:
            try:
                work()
                self._conn.commit()
            except BaseException:
                self._conn.rollback()
                raise

    def create_schema(self) -> None:
        def work() -> None:
            for statement in self.dialect.create_statements():
                try:
                    self._execute(statement)
                except Exception as exc:  # noqa: BLE001 - older IRIS: no IF NOT EXISTS
                    if not self.dialect.is_already_exists(exc):
                        raise
        self._transaction(work)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # ------------------------------------------------------------------------------------ runs
    def start_run(self, run_id: str, lm: str, model_id: str, settings: dict[str, Any]) -> bool:
        """Create the run, or mark an existing one running again. True if it already existed."""
        existing = self.get_run(run_id)

        def work() -> None:
            if existing is None:
                self._execute(f"INSERT INTO {self._t('batchx_runs')} (run_id, lm, model_id, settings, started, status) "
                              "VALUES (?, ?, ?, ?, ?, ?)", (run_id, lm, model_id, json.dumps(settings), now(), "running"))
            else:
                self._execute(f"UPDATE {self._t('batchx_runs')} SET status = ?, lm = ?, model_id = ?, settings = ? "
                              "WHERE run_id = ?", ("running", lm, model_id, json.dumps(settings), run_id))
        self._transaction(work)
        return existing is not None

    def finish_run(self, run_id: str, status: str, summary: dict[str, Any]) -> None:
        self._transaction(lambda: self._execute(
            f"UPDATE {self._t('batchx_runs')} SET finished = ?, status = ?, summary = ? WHERE run_id = ?",
            (now(), status, json.dumps(summary, default=str), run_id)))

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        rows = self._query(f"SELECT * FROM {self._t('batchx_runs')} WHERE run_id = ?", (run_id,))
        return rows[0] if rows else None

    def runs(self) -> list[dict[str, Any]]:
        return self._query(f"SELECT run_id, lm, model_id, started, finished, status FROM {self._t('batchx_runs')}")

    # ------------------------------------------------------------------------------- documents
    def statuses(self, run_id: str) -> dict[str, str]:
        rows = self._query(f"SELECT doc_id, status FROM {self._t('batchx_documents')} WHERE run_id = ?", (run_id,))
        return {r["doc_id"]: r["status"] for r in rows}

    def mark_pending(self, run_id: str, docs: Iterable[tuple[str, int | None, str | None]]) -> None:
        """Record documents about to be processed (``(id, token_count, source)``) as pending,
        replacing earlier rows of those documents (they were not extracted)."""
        rows = list(docs)

        def work() -> None:
            self._many(f"DELETE FROM {self._t('batchx_documents')} WHERE run_id = ? AND doc_id = ?",
                       [(run_id, d) for d, _, _ in rows])
            self._many(f"INSERT INTO {self._t('batchx_documents')} (run_id, doc_id, status, token_count, source, updated) "
                       "VALUES (?, ?, ?, ?, ?, ?)", [(run_id, d, "pending", n, s, now()) for d, n, s in rows])
        self._transaction(work)

    def save_documents(self, run_id: str, outcomes: Iterable[Any]) -> None:
        """Save finished documents (objects with ``id``, ``status``, ``reason``, ``entities``,
        ``relationships``; optional ``token_count`` and ``source``): each replaces its own rows."""
        items = list(outcomes)
        if not items:
            return
        stamp = now()

        def work() -> None:
            keys = [(run_id, o.id) for o in items]
            for table in ("batchx_entities", "batchx_relationships", "batchx_documents"):
                self._many(f"DELETE FROM {self._t(table)} WHERE run_id = ? AND doc_id = ?", keys)
            self._many(
                f"INSERT INTO {self._t('batchx_documents')} (run_id, doc_id, status, reason, token_count, source, updated) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(run_id, o.id, o.status, (o.reason or None) and str(o.reason)[:2000], getattr(o, "token_count", None),
                  getattr(o, "source", None), stamp) for o in items])
            self._many(
                f"INSERT INTO {self._t('batchx_entities')} (run_id, doc_id, seq, mention, entity_type, start_offset, "
                "end_offset, confidence) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(run_id, o.id, i, e.text, e.type, e.start, e.end, e.confidence)
                 for o in items for i, e in enumerate(o.entities)])
            self._many(
                f"INSERT INTO {self._t('batchx_relationships')} (run_id, doc_id, seq, source_text, target_text, rel_type) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(run_id, o.id, i, r.source, r.target, r.type) for o in items for i, r in enumerate(o.relationships)])
        self._transaction(work)

    def save_attempts(self, run_id: str, attempts: Iterable[AttemptRecord]) -> None:
        rows = []
        for a in attempts:
            self._seq += 1
            rows.append((run_id, self.session_id, self._seq, a.batch_id, a.attempt, a.outcome, len(a.document_ids),
                         a.started, a.seconds, a.tokens_in, a.tokens_out, a.error_class, (a.error or None) and a.error[:1000],
                         a.entities, a.leaks, a.ungrounded, a.repaired))
        self._transaction(lambda: self._many(
            f"INSERT INTO {self._t('batchx_attempts')} (run_id, session_id, seq, batch_id, attempt, outcome, n_docs, "
            "started, seconds, tokens_in, tokens_out, error_class, error, entities, leaks, ungrounded, repaired) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows))

    # ---------------------------------------------------------------------------------- reading
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

    def attempts(self, run_id: str) -> list[dict[str, Any]]:
        return self._query(f"SELECT * FROM {self._t('batchx_attempts')} WHERE run_id = ? ORDER BY session_id, seq",
                           (run_id,))

    def count(self, table: str, run_id: str) -> int:
        if table not in SCHEMA:
            raise ValueError(f"unknown table {table!r}")
        return self._query(f"SELECT COUNT(*) AS n FROM {self._t(table)} WHERE run_id = ?", (run_id,))[0]["n"]
