"""The SQL differences between the stores, in one place: column types, DDL and name qualification.

The schema is written once with placeholder types (``{str:N}``, ``{text}``, ``{int}``, ``{float}``)
that each dialect renders. IRIS: every VARCHAR has a length, there is no BOOLEAN (flags are
INTEGER), ``CREATE TABLE IF NOT EXISTS`` is missing on older servers (they answer SQLCODE -201,
"table already exists", which :meth:`Dialect.is_already_exists` recognises), and unqualified
tables land in schema ``SQLUser`` (``schema`` qualifies them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_ID_CHARS = 300  # document ids longer than this are rejected as bad input

SCHEMA: dict[str, str] = {
    "batchx_runs": """run_id {str:200} NOT NULL PRIMARY KEY, lm {str:200}, model_id {str:300},
        settings {text}, started {str:40}, finished {str:40}, status {str:20}, summary {text}""",
    "batchx_documents": """run_id {str:200} NOT NULL, doc_id {str:300} NOT NULL, status {str:16} NOT NULL,
        reason {str:2000}, token_count {int}, source {str:500}, updated {str:40},
        PRIMARY KEY (run_id, doc_id)""",
    "batchx_entities": """run_id {str:200} NOT NULL, doc_id {str:300} NOT NULL, seq {int} NOT NULL,
        mention {str:1000} NOT NULL, entity_type {str:100} NOT NULL, start_offset {int}, end_offset {int},
        confidence {float}, PRIMARY KEY (run_id, doc_id, seq)""",
    "batchx_relationships": """run_id {str:200} NOT NULL, doc_id {str:300} NOT NULL, seq {int} NOT NULL,
        source_text {str:1000} NOT NULL, target_text {str:1000} NOT NULL, rel_type {str:100} NOT NULL,
        PRIMARY KEY (run_id, doc_id, seq)""",
    "batchx_attempts": """run_id {str:200} NOT NULL, session_id {str:40} NOT NULL, seq {int} NOT NULL,
        batch_id {str:100}, attempt {int}, outcome {str:16}, n_docs {int}, started {float}, seconds {float},
        tokens_in {int}, tokens_out {int}, error_class {str:40}, error {str:1000}, entities {int},
        leaks {int}, ungrounded {int}, repaired {int}, PRIMARY KEY (run_id, session_id, seq)""",
}
INDEXES = {"batchx_entities": "doc_id", "batchx_documents": "status"}


@dataclass(frozen=True)
class Dialect:
    name: str
    text_type: str
    float_type: str
    if_not_exists: bool = True
    schema: str | None = None

    def table(self, name: str) -> str:
        return f"{self.schema}.{name}" if self.schema else name

    def render(self, columns: str) -> str:
        out = re.sub(r"\{str:(\d+)\}", r"VARCHAR(\1)", columns)
        return out.replace("{text}", self.text_type).replace("{int}", "INTEGER").replace("{float}", self.float_type)

    def create_statements(self) -> list[str]:
        guard = "IF NOT EXISTS " if self.if_not_exists else ""
        return [f"CREATE TABLE {guard}{self.table(name)} ({self.render(cols)})" for name, cols in SCHEMA.items()]

    def is_already_exists(self, error: BaseException) -> bool:
        text = str(error).lower()
        return "already exists" in text or "-201" in text or "sqlcode: <-201>" in text


SQLITE = Dialect("sqlite", text_type="TEXT", float_type="REAL")


def iris_dialect(schema: str | None = None, if_not_exists: bool = True) -> Dialect:
    return Dialect("iris", text_type="VARCHAR(32000)", float_type="DOUBLE", if_not_exists=if_not_exists,
                   schema=schema)
