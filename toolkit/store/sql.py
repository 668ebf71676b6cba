"""One store over any DB-API connection with ``?`` parameters (sqlite3 and ``iris.dbapi`` both).

Writes are idempotent: saving a document replaces its own rows (status, entities, relationships)
in one transaction, so re-running a document never duplicates it. Every value goes through a
parameter; nothing from a document or a model reply is ever formatted into SQL. Text that comes
from outside (reasons, errors, summaries) is redacted (:mod:`toolkit.redact`) and clipped to its
column. A run is owned by one process at a time (:meth:`SQLStore.start_run` takes a lease that
the owner renews; writes by a process that lost it are refused). Database errors (a file locked
longer than the busy timeout, a lost connection) surface as :class:`StoreError`.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

from toolkit.documents import Entity, Relationship
from toolkit.metrics import AttemptRecord
from toolkit.redact import redact
from toolkit.store.dialect import COLUMNS, SCHEMA, Dialect, column_chars

LEASE_SECONDS = 60.0  # a run's owner renews its lease well within this; a crashed owner's run frees after it


class StoreError(RuntimeError):
    """A store URL that cannot be used, or a database that cannot be reached or written."""


class RunBusy(StoreError):
    """The run is owned by another live process."""


class LeaseLost(StoreError):
    """This process no longer owns the run (another took it over after the lease expired)."""


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def new_owner() -> str:
    """An owner token: host, process id and a random part (two runs of one process differ)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _owner_alive(owner: str) -> bool:
    """False when ``owner`` is a process of this host that has exited (its lease can be taken at once)."""
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _clip(text: Any, table: str, column: str) -> str | None:
    """Informational text, redacted and clipped to its column (the start kept, an ellipsis added)."""
    if text is None or text == "":
        return None
    limit = column_chars(table, column)
    value = redact(str(text)) or ""
    return value if len(value) <= limit else value[: limit - 1] + "…"


class SQLStore:
    """The :class:`~toolkit.store.Store` implementation (see the module docstring)."""

    def __init__(self, connect: Callable[[], Any], dialect: Dialect, url: str,
                 errors: tuple[type[BaseException], ...] = ()) -> None:
        self.dialect = dialect
        self.url = url
        self._errors = errors
        self._lock = threading.RLock()
        self._owners: dict[str, str] = {}  # run id -> this store's owner token, while it holds the run
        self.session_id = uuid.uuid4().hex[:12]
        self._seq = 0
        with self._translated("connecting"):
            self._conn = connect()
        self.create_schema()

    # ------------------------------------------------------------------------------- plumbing
    @contextmanager
    def _translated(self, doing: str) -> Iterator[None]:
        """Database errors as :class:`StoreError` naming the store and what was being done."""
        try:
            yield
        except StoreError:
            raise
        except self._errors as exc:
            hint = " (another process holds the database longer than the busy timeout)" \
                if "locked" in str(exc).lower() or "busy" in str(exc).lower() else ""
            raise StoreError(f"{self.url}: {doing}: {redact(str(exc))}{hint}") from None

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
        with self._lock, self._translated("reading"):
            cur = self._execute(sql, params)
            names = [d[0].lower() for d in cur.description]
            return [dict(zip(names, row)) for row in cur.fetchall()]

    def _transaction(self, work: Callable[[], Any], doing: str = "writing", run_id: str | None = None) -> Any:
        """``work()`` in one transaction; with ``run_id``, only while this store owns that run."""
        with self._lock, self._translated(doing):
            try:
                if run_id is not None and run_id in self._owners:
                    self._check_owner(run_id)
                result = work()
                self._conn.commit()
                return result
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
            for table, columns in COLUMNS.items():  # tables made by an older version
                have = {d[0].lower() for d in self._execute(f"SELECT * FROM {self._t(table)} WHERE 1 = 0").description}
                for name, _ in columns:
                    if name not in have:
                        self._execute(self.dialect.add_column(table, name))
        self._transaction(work, "creating tables")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # ------------------------------------------------------------------------------------ runs
    def start_run(self, run_id: str, lm: str, model_id: str, settings: dict[str, Any],
                  lease: float = LEASE_SECONDS) -> bool:
        """Create ``run_id`` or take it over, owned by this store until :meth:`finish_run`. True if
        it already existed. Raises :class:`RunBusy` while another live process owns it."""
        owner = new_owner()
        values = (lm, model_id, json.dumps(settings), owner, time.time() + lease)
        existing = self.get_run(run_id)
        if existing is None:
            try:
                self._transaction(lambda: self._execute(
                    f"INSERT INTO {self._t('batchx_runs')} (run_id, lm, model_id, settings, owner, lease_until, "
                    "started, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", (run_id, *values, now(), "running")),
                    "starting the run")
                self._owners[run_id] = owner
                return False
            except StoreError:
                existing = self.get_run(run_id)  # another process created it meanwhile
                if existing is None:
                    raise
        if self._held(existing) and existing["owner"] != self._owners.get(run_id):
            raise RunBusy(f"run {run_id!r} is in use by another process ({existing['owner']}, lease until "
                          f"{datetime.fromtimestamp(existing['lease_until'], timezone.utc):%H:%M:%S} UTC): wait for it "
                          "to finish, or use another --run name")
        swapped = self._transaction(lambda: self._execute(  # compare-and-set: nobody took it since we read it
            f"UPDATE {self._t('batchx_runs')} SET lm = ?, model_id = ?, settings = ?, owner = ?, lease_until = ?, "
            "status = ? WHERE run_id = ? AND (owner IS NULL OR owner = ?)",
            (*values, "running", run_id, existing["owner"] or "")).rowcount, "starting the run")
        if swapped != 1:
            raise RunBusy(f"run {run_id!r} was taken by another process while starting; try again")
        self._owners[run_id] = owner
        return True

    def _held(self, row: dict[str, Any]) -> bool:
        """Whether another process holds the run of ``row`` now."""
        if row["status"] != "running" or not row["owner"]:
            return False
        return (row["lease_until"] or 0) > time.time() and _owner_alive(row["owner"])

    def renew_lease(self, run_id: str, lease: float = LEASE_SECONDS) -> None:
        """Extend this store's lease on ``run_id``; :class:`LeaseLost` if another process took it."""
        owner = self._owners.get(run_id)
        if owner is None:
            raise LeaseLost(f"run {run_id!r} is not owned by this process")
        changed = self._transaction(lambda: self._execute(
            f"UPDATE {self._t('batchx_runs')} SET lease_until = ? WHERE run_id = ? AND owner = ?",
            (time.time() + lease, run_id, owner)).rowcount, "renewing the run's lease")
        if changed != 1:
            self._owners.pop(run_id, None)
            raise LeaseLost(f"run {run_id!r} was taken over by another process; this one stops writing to it")

    def _check_owner(self, run_id: str) -> None:
        row = self._execute(f"SELECT owner FROM {self._t('batchx_runs')} WHERE run_id = ?", (run_id,)).fetchone()
        if row is None or row[0] != self._owners[run_id]:
            self._owners.pop(run_id, None)
            raise LeaseLost(f"run {run_id!r} was taken over by another process; this one stops writing to it")

    def finish_run(self, run_id: str, status: str, summary: dict[str, Any]) -> None:
        """Record the run's end and release it."""
        text = redact(json.dumps(summary, default=str))
        self._transaction(lambda: self._execute(
            f"UPDATE {self._t('batchx_runs')} SET finished = ?, status = ?, summary = ?, owner = NULL, "
            "lease_until = NULL WHERE run_id = ?", (now(), status, text, run_id)), "finishing the run", run_id)
        self._owners.pop(run_id, None)

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        rows = self._query(f"SELECT * FROM {self._t('batchx_runs')} WHERE run_id = ?", (run_id,))
        return rows[0] if rows else None

    def runs(self) -> list[dict[str, Any]]:
        """Every run; ``status`` ``running`` only while its owner holds it (else ``abandoned``: the
        process ended without finishing it; resume it by name)."""
        rows = self._query(f"SELECT run_id, lm, model_id, started, finished, status, owner, lease_until "
                           f"FROM {self._t('batchx_runs')}")
        for row in rows:
            if row["status"] == "running" and not self._held(row) and row["run_id"] not in self._owners:
                row["status"] = "abandoned"
        return rows

    # ------------------------------------------------------------------------------- documents
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
            for table in ("batchx_entities", "batchx_relationships", "batchx_documents"):
                self._many(f"DELETE FROM {self._t(table)} WHERE run_id = ? AND doc_id = ?", keys)
            self._many(f"INSERT INTO {self._t('batchx_documents')} (run_id, doc_id, status, token_count, source, "
                       "text_sha256, updated) VALUES (?, ?, ?, ?, ?, ?, ?)",
                       [(run_id, d, "pending", n, _clip(s, "batchx_documents", "source"), h, now())
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
            for table in ("batchx_entities", "batchx_relationships"):
                self._many(f"DELETE FROM {self._t(table)} WHERE run_id = ? AND doc_id = ?", keys)
            for o in items:
                reason = _clip(o.reason, "batchx_documents", "reason")
                extra = (getattr(o, "token_count", None), _clip(getattr(o, "source", None), "batchx_documents",
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
                f"INSERT INTO {self._t('batchx_relationships')} (run_id, doc_id, seq, source_text, target_text, rel_type) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(run_id, o.id, i, r.source, r.target, r.type) for o in items for i, r in enumerate(o.relationships)])
        self._transaction(work, "saving documents", run_id)

    def save_attempts(self, run_id: str, attempts: Iterable[AttemptRecord]) -> None:
        """One row per call: where and when, how it ended, and every count it carries."""
        names = [name for name, _ in COLUMNS["batchx_attempts"]]
        rows = []
        for a in attempts:
            self._seq += 1
            row = {**a.flat(), "run_id": run_id, "session_id": self.session_id, "seq": self._seq,
                   "n_docs": len(a.document_ids), "error": _clip(a.error, "batchx_attempts", "error")}
            rows.append(tuple(row[name] for name in names))
        self._transaction(lambda: self._many(
            f"INSERT INTO {self._t('batchx_attempts')} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
            rows), "saving calls", run_id)

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
