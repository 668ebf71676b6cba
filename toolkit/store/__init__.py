"""Where results go: an embedded SQLite file by default, InterSystems IRIS for those who run it.

``open_store(url)`` accepts:

* ``sqlite:///PATH[?timeout=SECONDS]`` (a file, created with its tables on first use; ``timeout``:
  how long a write waits for another process's lock, default 30) or ``sqlite://:memory:``;
* ``iris://USER:PASSWORD@HOST:PORT/NAMESPACE[?schema=NAME]`` through ``intersystems-irispython``
  (``iris.dbapi``), or ``iris://`` alone to read ``IRIS_HOST``, ``IRIS_PORT``, ``IRIS_NAMESPACE``,
  ``IRIS_USER`` and ``IRIS_PASSWORD`` from the environment (the password is never logged).

Both speak one schema (runs, documents, entities, relationships, batch attempts) through one
implementation, :class:`~toolkit.store._sql.SQLStore`; the SQL differences live in
:mod:`toolkit.store._dialect`.
"""

from __future__ import annotations

import os
import re
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from toolkit.core import Dropped, Entity, Relationship, redact, split_userinfo
from toolkit.execution import AttemptRecord
from toolkit.store._batches import OPEN
from toolkit.store._dialect import MAX_ID_CHARS, MAX_MENTION_CHARS, MAX_RUN_CHARS, MAX_TYPE_CHARS, SQLITE, iris_dialect
from toolkit.store._lease import LeaseKeeper
from toolkit.store._sql import LeaseLost, RunBusy, SQLStore, StoreError

__all__ = [
    "DEFAULT_URL", "DocumentRecord", "IRIS_ENV", "LeaseKeeper", "LeaseLost", "MAX_ID_CHARS", "MAX_MENTION_CHARS",
    "MAX_RUN_CHARS", "MAX_TYPE_CHARS", "OPEN", "RunBusy", "SQLStore", "Store", "StoreError", "iris_settings",
    "open_store",
]

DEFAULT_URL = "sqlite:///batchx.db"
IRIS_ENV = ("IRIS_HOST", "IRIS_PORT", "IRIS_NAMESPACE", "IRIS_USER", "IRIS_PASSWORD")


class DocumentRecord(Protocol):
    """A document's outcome as a store saves it (a :class:`~toolkit.execution.DocumentOutcome`, or
    the main job's record of a rejected input; ``token_count``, ``source`` and ``digest`` are read
    where present)."""

    @property
    def id(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def reason(self) -> str | None: ...
    @property
    def entities(self) -> Sequence[Entity]: ...
    @property
    def relationships(self) -> Sequence[Relationship]: ...


class Store(Protocol):
    """What the main job and its runners ask of a store (:class:`~toolkit.store.SQLStore`)."""

    url: str

    def start_run(self, run_id: str, lm: str, model_id: str, settings: dict[str, Any]) -> bool: ...
    def finish_run(self, run_id: str, status: str, summary: dict[str, Any]) -> None: ...
    def get_run(self, run_id: str) -> dict[str, Any] | None: ...
    def renew_lease(self, run_id: str) -> None: ...
    def runs(self) -> list[dict[str, Any]]: ...
    def statuses(self, run_id: str) -> dict[str, str]: ...
    def digests(self, run_id: str, status: str = "extracted") -> dict[str, str | None]: ...
    def mark_pending(self, run_id: str, docs: Iterable[tuple[str, int | None, str | None, str | None]]) -> None: ...
    def save_documents(self, run_id: str, outcomes: Iterable[DocumentRecord]) -> None: ...
    def save_attempts(self, run_id: str, attempts: Iterable[AttemptRecord]) -> None: ...
    def documents(self, run_id: str) -> list[dict[str, Any]]: ...
    def entities(self, run_id: str, doc_id: str | None = None) -> list[Entity]: ...
    def relationships(self, run_id: str) -> list[Relationship]: ...
    def dropped(self, run_id: str) -> list[Dropped]: ...
    def attempts(self, run_id: str) -> list[dict[str, Any]]: ...
    def count(self, table: str, run_id: str) -> int: ...
    def save_batch_job(self, run_id: str, job_key: str, requests: Mapping[str, Sequence[str]],
                       input_file_id: str | None = None, status: str = "uploaded") -> None: ...
    def update_batch_job(self, run_id: str, job_key: str, **values: str | None) -> None: ...
    def batch_jobs(self, run_id: str, open_only: bool = False) -> list[dict[str, Any]]: ...
    def batch_lines_recorded(self, run_id: str, job_key: str) -> bool: ...
    def close(self) -> None: ...


def open_store(url: str | None = None) -> SQLStore:
    url = url or DEFAULT_URL
    scheme = url.split(":", 1)[0].lower()
    if scheme == "sqlite":
        return _sqlite(url)
    if scheme == "iris":
        return _iris(url)
    named = f" {scheme!r}" if re.fullmatch(r"[a-z][a-z0-9+.\-]{0,30}", scheme) and "://" in url else ""
    raise StoreError(f"unknown store{named} (the URL is not quoted: it may hold a password): use sqlite:///PATH or "
                     "iris://USER:PASSWORD@HOST:PORT/NAMESPACE")


def _sqlite(url: str) -> SQLStore:
    rest, _, query = url[len("sqlite://"):].partition("?")
    if not rest.startswith("/") and rest != ":memory:":  # not quoted: it may hold a user and password
        raise StoreError("a SQLite store is sqlite:///relative/path.db, sqlite:////absolute/path.db or sqlite://:memory:"
                         + (" (it takes no user or password)" if "@" in url else ""))
    try:
        timeout = float(parse_qs(query).get("timeout", ["30"])[0])
    except ValueError:
        raise StoreError(f"{url!r}: timeout must be a number of seconds") from None
    if rest in (":memory:", "/:memory:"):
        target = ":memory:"
    else:
        target = rest[1:]
        if not target:
            raise StoreError(f"{url!r}: no database file given")
        path = Path(target).expanduser()
        if path.is_dir():
            raise StoreError(f"{url!r}: {path} is a directory, not a database file")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"{url!r}: cannot create {path.parent}: {exc.strerror or exc}") from None

    def connect() -> sqlite3.Connection:
        conn = sqlite3.connect(target, check_same_thread=False, timeout=timeout)
        conn.execute("PRAGMA journal_mode=WAL" if target != ":memory:" else "PRAGMA journal_mode=MEMORY")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    return SQLStore(connect, SQLITE, url.partition("?")[0], errors=(sqlite3.Error,))


def iris_settings(url: str) -> dict[str, Any]:
    """Connection settings from an ``iris://`` URL, completed from the ``IRIS_*`` environment. A
    password holding ``/``, ``?`` or ``#`` must be percent-encoded (the error says how); no error
    quotes any part of the user or password."""
    try:
        username, password, rest = split_userinfo(url)
    except ValueError as exc:
        raise StoreError(f"iris:// URL: {exc}") from None
    try:
        parsed = urlsplit(rest)
        hostname, port = parsed.hostname, parsed.port
    except ValueError:
        raise StoreError(f"iris:// URL: cannot read its HOST:PORT ({redact(rest)!r}); write "
                         "iris://USER:PASSWORD@HOST:PORT/NAMESPACE with PORT a number up to 65535") from None
    env = os.environ
    settings = {
        "hostname": hostname or env.get("IRIS_HOST"),
        "port": port or _env_port(env.get("IRIS_PORT")),
        "namespace": (parsed.path or "").strip("/") or env.get("IRIS_NAMESPACE") or "USER",
        "username": username or env.get("IRIS_USER"),
        "password": password or env.get("IRIS_PASSWORD"),
    }
    if not settings["hostname"]:
        raise StoreError("IRIS host not given: use iris://USER:PASSWORD@HOST:PORT/NAMESPACE or set IRIS_HOST")
    schema = parse_qs(parsed.query).get("schema", [None])[0]
    return {**settings, "schema": schema}


def _env_port(value: str | None) -> int:
    if not value:
        return 1972
    if not value.strip().isdigit() or not 0 < int(value) < 65536:
        raise StoreError(f"IRIS_PORT must be a port number (1 to 65535), not {value[:20]!r}")
    return int(value)


def _iris(url: str) -> SQLStore:
    try:
        import iris.dbapi
    except ImportError as exc:
        raise StoreError("the IRIS store needs intersystems-irispython: pip install 'batchx-toolkit[iris]'") from exc
    settings = iris_settings(url)
    schema = settings.pop("schema")
    try:
        dialect = iris_dialect(schema)
    except ValueError as exc:
        raise StoreError(f"iris:// ?schema=: {exc}") from None
    where = f"{settings['hostname']}:{settings['port']}/{settings['namespace']}"

    def connect() -> Any:
        try:
            return iris.dbapi.connect(**settings, timeout=10)
        except iris.dbapi.Error as exc:  # OperationalError: unreachable, refused, bad login
            raise StoreError(f"cannot connect to IRIS at {where} as {settings['username']!r}: "
                             f"{redact(str(exc), settings['password'])}") from None

    return SQLStore(connect, dialect, f"iris://{settings['username']}@{where}", errors=(iris.dbapi.Error,))
