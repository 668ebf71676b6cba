"""The SQL differences between the stores, in one place: column types, DDL and name qualification.

The schema is written once with placeholder types (``{str:N}``, ``{text}``, ``{int}``, ``{float}``)
that each dialect renders. IRIS: every VARCHAR has a length (enforced: a longer value is an insert
error, so :func:`column_chars` tells validation the limits), there is no BOOLEAN (flags are
INTEGER), a string column's default collation (SQLUPPER) ignores case and trailing spaces, so ids
``d1``, ``D1`` and ``d1 `` would be one key (every VARCHAR is ``COLLATE %EXACT`` instead: ids compare
as SQLite compares them; tables made before keep their collation), ``CREATE TABLE IF NOT EXISTS`` is
missing on older servers (they answer SQLCODE -201,
"table already exists", which :meth:`Dialect.is_already_exists` recognises), and unqualified
tables land in schema ``SQLUser`` (``schema`` qualifies them; only a plain identifier is accepted).
A table made by an older version gains the columns added since (:meth:`Dialect.add_column`),
which is how a new count of :mod:`toolkit.core._counts` becomes a column of the attempts table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from toolkit.core import FIELDS as COUNT_FIELDS

Column = tuple[str, str]  # (name, type and constraints)

COLUMNS: dict[str, tuple[Column, ...]] = {
    "batchx_runs": (
        ("run_id", "{str:200} NOT NULL PRIMARY KEY"), ("lm", "{str:200}"), ("model_id", "{str:300}"),
        ("settings", "{text}"), ("started", "{str:40}"), ("finished", "{str:40}"), ("status", "{str:20}"),
        ("summary", "{text}"), ("owner", "{str:200}"), ("lease_until", "{float}"),
    ),
    "batchx_documents": (
        ("run_id", "{str:200} NOT NULL"), ("doc_id", "{str:300} NOT NULL"), ("status", "{str:16} NOT NULL"),
        ("reason", "{str:2000}"), ("token_count", "{int}"), ("source", "{str:500}"), ("updated", "{str:40}"),
        ("text_sha256", "{str:64}"),
    ),
    "batchx_entities": (
        ("run_id", "{str:200} NOT NULL"), ("doc_id", "{str:300} NOT NULL"), ("seq", "{int} NOT NULL"),
        ("mention", "{str:1000} NOT NULL"), ("entity_type", "{str:100} NOT NULL"), ("start_offset", "{int}"),
        ("end_offset", "{int}"), ("confidence", "{float}"),
    ),
    "batchx_relationships": (
        ("run_id", "{str:200} NOT NULL"), ("doc_id", "{str:300} NOT NULL"), ("seq", "{int} NOT NULL"),
        ("source_text", "{str:1000} NOT NULL"), ("target_text", "{str:1000} NOT NULL"),
        ("rel_type", "{str:100} NOT NULL"),
    ),
    "batchx_dropped": (  # mentions validation did not keep: leaks (with the document they are in), ungrounded
        ("run_id", "{str:200} NOT NULL"), ("doc_id", "{str:300} NOT NULL"), ("seq", "{int} NOT NULL"),
        ("mention", "{str:1000} NOT NULL"), ("entity_type", "{str:100} NOT NULL"), ("why", "{str:16} NOT NULL"),
        ("found_in", "{str:300}"),
    ),
    "batchx_attempts": (  # one row per call: these, then a column per count of toolkit.core._counts
        ("run_id", "{str:200} NOT NULL"), ("session_id", "{str:40} NOT NULL"), ("seq", "{int} NOT NULL"),
        ("batch_id", "{str:100}"), ("attempt", "{int}"), ("outcome", "{str:16}"), ("n_docs", "{int}"),
        ("started", "{float}"), ("at", "{float}"), ("seconds", "{float}"), ("delay_before", "{float}"),
        ("rate_wait", "{float}"),
        ("in_flight", "{int}"), ("error_class", "{str:40}"), ("error", "{str:1000}"),
        *((name, "{int}") for name in COUNT_FIELDS),
    ),
    "batchx_batch_jobs": (  # request files submitted to a provider's batch API (toolkit.jobs.batchapi)
        ("run_id", "{str:200} NOT NULL"), ("job_key", "{str:100} NOT NULL"), ("input_file_id", "{str:200}"),
        ("batch_id", "{str:200}"), ("status", "{str:20}"), ("requests", "{int}"), ("output_file_id", "{str:200}"),
        ("error_file_id", "{str:200}"), ("submitted", "{str:40}"), ("updated", "{str:40}"),
    ),
    "batchx_batch_docs": (  # which request (custom_id) of which job each document was sent in
        ("run_id", "{str:200} NOT NULL"), ("job_key", "{str:100} NOT NULL"), ("doc_id", "{str:300} NOT NULL"),
        ("custom_id", "{str:400} NOT NULL"),
    ),
}
KEYS = {
    "batchx_documents": "PRIMARY KEY (run_id, doc_id)",
    "batchx_entities": "PRIMARY KEY (run_id, doc_id, seq)",
    "batchx_relationships": "PRIMARY KEY (run_id, doc_id, seq)",
    "batchx_dropped": "PRIMARY KEY (run_id, doc_id, seq)",
    "batchx_attempts": "PRIMARY KEY (run_id, session_id, seq)",
    "batchx_batch_jobs": "PRIMARY KEY (run_id, job_key)",
    "batchx_batch_docs": "PRIMARY KEY (run_id, job_key, doc_id)",
}
SCHEMA = tuple(COLUMNS)
_LENGTH = re.compile(r"\{str:(\d+)\}")
_IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,127}")


def column_chars(table: str, column: str) -> int:
    """The most characters ``table.column`` holds (its VARCHAR length)."""
    spec = dict(COLUMNS[table])[column]
    match = _LENGTH.search(spec)
    if match is None:
        raise ValueError(f"{table}.{column} is not a VARCHAR column")
    return int(match.group(1))


MAX_ID_CHARS = column_chars("batchx_documents", "doc_id")  # longer document ids are bad input
MAX_RUN_CHARS = column_chars("batchx_runs", "run_id")
MAX_MENTION_CHARS = column_chars("batchx_entities", "mention")
MAX_TYPE_CHARS = column_chars("batchx_entities", "entity_type")


@dataclass(frozen=True)
class Dialect:
    name: str
    text_type: str
    float_type: str
    if_not_exists: bool = True
    schema: str | None = None
    collate: str = ""  # appended to every VARCHAR: how its values compare

    def __post_init__(self) -> None:
        if self.schema is not None and not _IDENTIFIER.fullmatch(self.schema):
            raise ValueError(f"schema name {self.schema!r} is not a plain identifier (letters, digits, _; a letter "
                             "first)")

    def table(self, name: str) -> str:
        return f"{self.schema}.{name}" if self.schema else name

    def render(self, spec: str) -> str:
        out = _LENGTH.sub(rf"VARCHAR(\1){self.collate}", spec)
        return out.replace("{text}", self.text_type).replace("{int}", "INTEGER").replace("{float}", self.float_type)

    def create_statements(self) -> list[str]:
        guard = "IF NOT EXISTS " if self.if_not_exists else ""
        out = []
        for name, columns in COLUMNS.items():
            body = [f"{col} {self.render(spec)}" for col, spec in columns] + ([KEYS[name]] if name in KEYS else [])
            out.append(f"CREATE TABLE {guard}{self.table(name)} ({', '.join(body)})")
        return out

    def add_column(self, table: str, column: str) -> str:
        """DDL adding ``column`` (nullable, as every column added after a table's first version)."""
        spec = dict(COLUMNS[table])[column].replace(" NOT NULL", "")
        return f"ALTER TABLE {self.table(table)} ADD COLUMN {column} {self.render(spec)}"

    def is_already_exists(self, error: BaseException) -> bool:
        text = str(error).lower()
        return "already exists" in text or "-201" in text or "sqlcode: <-201>" in text


SQLITE = Dialect("sqlite", text_type="TEXT", float_type="REAL")


def iris_dialect(schema: str | None = None, if_not_exists: bool = True) -> Dialect:
    return Dialect("iris", text_type="VARCHAR(32000)", float_type="DOUBLE", if_not_exists=if_not_exists,
                   schema=schema, collate=" COLLATE %EXACT")
