"""The plumbing under the store: one DB-API connection with ``?`` parameters (sqlite3 and
``iris.dbapi`` both), transactions, the schema (created, and given the columns added since an
older version made it), and database errors as :class:`StoreError`."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from toolkit.core import redact
from toolkit.store._dialect import COLUMNS, Dialect, column_chars


class StoreError(RuntimeError):
    """A store URL that cannot be used, or a database that cannot be reached or written."""


class RunBusy(StoreError):
    """The run is owned by another live process."""


class LeaseLost(StoreError):
    """This process no longer owns the run (another took it over after the lease expired)."""


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def clip(text: Any, table: str, column: str) -> str | None:
    """Informational text, redacted and clipped to its column (the start kept, an ellipsis added)."""
    if text is None or text == "":
        return None
    limit = column_chars(table, column)
    value = redact(str(text)) or ""
    return value if len(value) <= limit else value[: limit - 1] + "…"


class Database:
    """A connection, its lock and its dialect; :meth:`_transaction` runs work in one transaction."""

    def __init__(self, connect: Callable[[], Any], dialect: Dialect, url: str,
                 errors: tuple[type[BaseException], ...] = ()) -> None:
        self.dialect = dialect
        self.url = url
        self._errors = errors
        self._lock = threading.RLock()
        with self._translated("connecting"):
            self._conn = connect()
        self.create_schema()

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
                if run_id is not None:
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
                except Exception as exc:  # older IRIS: no IF NOT EXISTS (its error is a driver's own)
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

    def _check_owner(self, run_id: str) -> None:
        """Refuse to write to ``run_id`` when another process owns it (see :mod:`toolkit.store._runs`)."""
        return None
