"""The one-document-per-call reference of ``eval``, kept between runs so a new comparison does not
pay for it again.

Every ``eval`` compares its configurations with one document per call on the same documents (A).
A finished A is written to ``<cache>/eval-cache/<key>.json`` (``$BATCHX_EVAL_CACHE_DIR`` moves the
folder) and read instead of running A again when the key matches. The key is a hash of everything
that could change A's answers or its seconds: the model id (with the weights hash for local
models), the backend's capabilities (rate limits, clock, layouts), the extraction settings (types,
demos and shots, output allowance), a digest of the request one document is sent (an edit of the
prompt's wording misses), the layout, the token budget, whether the prompt cache was on, the
machine (platform, processor, CPUs), each document's id and text digest in order, and the counts a
configuration's figures hold. A run that lost documents or was stopped is not kept. The entry
carries what the comparison needs: the figures of A's row, each document's predicted entities and
position, and every call (documents, seconds, tokens), from which the speedup and its interval are
computed as if A had just run.

The model id is trusted: an emulated profile file edited in place under the same name would hit
stale entries, and so would a change in how replies are parsed or validated; ``eval
--fresh-reference`` runs A again and replaces the entry.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolkit.core import FIELDS as COUNT_FIELDS, Document, Entity, cache_dir

CACHE_VERSION = 1  # bump when an entry's content, or what a configuration's figures hold, changes

__all__ = ["CACHE_VERSION", "Reference", "cache_root", "load_reference", "reference_key", "save_reference"]


def cache_root() -> Path:
    """``$BATCHX_EVAL_CACHE_DIR`` if set, else ``<cache>/eval-cache`` (see :func:`toolkit.core._paths.cache_dir`)."""
    if env := os.environ.get("BATCHX_EVAL_CACHE_DIR"):
        return Path(env).expanduser()
    return cache_dir() / "eval-cache"


def reference_key(documents: Sequence[Document], **fields: Any) -> str:
    """The entry's name: a hash of ``fields`` (model id, capabilities, settings, layout, budget, prompt
    cache, machine), of each document's id and text digest, in order, and of the cache's version and
    the counts a configuration's figures hold (a new counter misses entries stored without it)."""
    texts = [[d.id, hashlib.sha256(d.text.encode()).hexdigest()] for d in documents]
    payload = json.dumps({"version": CACHE_VERSION, "counts": list(COUNT_FIELDS), **fields, "documents": texts},
                         sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


@dataclass
class Reference:
    """A run of one document per call as ``eval`` uses it, from the cache or about to be stored."""

    name: str
    max_docs: int
    budget: int
    concurrency: str
    seconds: float  # the run's, on its clock
    figures: dict[str, Any]  # its row of eval's configurations, before scoring
    predictions: dict[str, list[Entity]]  # entities of each extracted document
    positions: dict[str, int]
    call_rows: list[dict[str, Any]]  # one row per call, as eval's ``calls`` table has them
    call_documents: list[list[str]]  # the documents each call carried (in the order of call_rows)
    source: str | None = None  # the cache file it was read from
    created: float = field(default_factory=time.time)

    def calls(self, prompt_cache: bool = False) -> list[dict[str, Any]]:
        return [{**row, "prompt_cache": prompt_cache} for row in self.call_rows]

    def call_times(self) -> list[tuple[list[str], float]]:
        """(documents, seconds) of each call, retries and failed calls included."""
        return [(docs, row["seconds"]) for docs, row in zip(self.call_documents, self.call_rows)]


def save_reference(path: Path, reference: Reference) -> Path:
    """Write ``reference`` to ``path`` (atomically: a reader never sees half an entry)."""
    data = dataclasses.asdict(reference)
    data.pop("source")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"version": CACHE_VERSION, **data}, default=str) + "\n")
    tmp.replace(path)
    return path


def load_reference(path: Path) -> Reference | None:
    """The entry at ``path``, or None when there is none (or it is unreadable or of another version)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.pop("version", None) != CACHE_VERSION:
        return None
    data["predictions"] = {doc_id: [Entity(**e) for e in ents] for doc_id, ents in data["predictions"].items()}
    return Reference(**data, source=str(path))
