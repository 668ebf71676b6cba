"""Corpora: streaming readers, named corpora from manifests, and a synthetic generator.

``iter_records(source)`` yields :class:`Document` or :class:`BadRecord` items from a named corpus
(``sample``, ``pubmed21n1298``, ``wnut16``, ``ncbi-disease``, ...) or a file (JSONL, PubTator,
CoNLL/BIO, PubMed XML, by suffix or content). ``load_corpus(source)`` is its strict form: documents
only, :class:`CorpusError` at the first bad record.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from toolkit.corpora.readers import (
    BadRecord,
    CorpusError,
    Record,
    iter_conll,
    iter_jsonl,
    iter_pubmed_xml,
    iter_pubtator,
    iter_pubtator_records,
)
from toolkit.corpora.registry import corpus_path, fetch_corpus, get_manifest, list_corpora, manifests
from toolkit.documents import Document, Entity

__all__ = [
    "BadRecord", "CorpusError", "Record", "corpus_path", "dedupe", "detect_format", "fetch_corpus",
    "iter_conll", "iter_gold", "iter_jsonl", "iter_pubmed_xml", "iter_pubtator", "iter_records", "list_corpora",
    "load_corpus", "manifests", "read_jsonl", "read_pubtator", "resolve", "synthetic_documents",
]

FORMATS = ("jsonl", "pubtator", "conll", "pubmed-xml")


def _sniff(path: Path) -> str | None:
    with path.open("rb") as handle:
        head = handle.read(4096).decode("utf-8", errors="replace")
    first = next((line for line in head.splitlines() if line.strip()), "")
    parts = first.split("|", 2)
    if len(parts) == 3 and parts[1] in ("t", "a"):
        return "pubtator"
    if first.lstrip().startswith("{"):
        return "jsonl"
    if first.lstrip().startswith("<?xml") or "<PubmedArticle" in head:
        return "pubmed-xml"
    if "\t" in first and len(first.split("\t")) == 2:
        return "conll"
    return None


def detect_format(path: Path) -> str:
    name = path.name.lower()
    if name.endswith((".jsonl", ".ndjson", ".jsonl.gz", ".json")):
        return "jsonl"
    if name.endswith(".pubtator"):
        return "pubtator"
    if name.endswith((".xml", ".xml.gz")):
        return "pubmed-xml"
    if name.endswith((".conll", ".bio")):
        return "conll"
    fmt = _sniff(path) if not name.endswith(".gz") else None
    if fmt is None:
        raise CorpusError(f"{path}: unknown corpus format (expected JSONL, PubTator, CoNLL/BIO or PubMed XML)")
    return fmt


def resolve(source: str | Path) -> tuple[Path, str]:
    """``(file, format)`` of a corpus name or path."""
    manifest = get_manifest(str(source))
    if manifest is not None:
        return corpus_path(manifest.name), manifest.format
    path = Path(source)
    if not path.exists():
        raise CorpusError(f"corpus {source!r}: no such file and not a known corpus ({', '.join(manifests())})")
    if path.is_dir():
        raise CorpusError(f"{path}: is a directory, expected a corpus file")
    return path, detect_format(path)


def iter_records(source: str | Path) -> Iterator[Record]:
    """Documents and bad records of ``source``, streamed in file order (a missing file or an
    unknown format raises at once, before iteration)."""
    return _records(*resolve(source))


def _records(path: Path, fmt: str) -> Iterator[Record]:
    if fmt == "jsonl":
        yield from iter_jsonl(path)
    elif fmt == "pubtator":
        for item in iter_pubtator_records(path):
            yield item if isinstance(item, BadRecord) else item[0]
    elif fmt == "conll":
        yield from (doc for doc, _ in iter_conll(path))
    elif fmt == "pubmed-xml":
        yield from iter_pubmed_xml(path)
    else:  # pragma: no cover - manifests are checked by tests
        raise CorpusError(f"{path}: unsupported format {fmt!r}")


def iter_gold(source: str | Path) -> Iterator[tuple[Document, list[Entity]]]:
    """``(document, gold entities)`` of an annotated corpus (PubTator or CoNLL/BIO)."""
    path, fmt = resolve(source)
    if fmt == "pubtator":
        return iter_pubtator(path)
    if fmt == "conll":
        return iter_conll(path)
    raise CorpusError(f"{path}: {fmt} has no gold annotations (use PubTator or CoNLL/BIO)")


def load_corpus(source: str | Path) -> Iterator[Document]:
    """Strict reading: documents only; the first bad record raises :class:`CorpusError`."""
    return _strict(iter_records(source))


def _strict(records: Iterator[Record]) -> Iterator[Document]:
    for item in records:
        if isinstance(item, BadRecord):
            raise CorpusError(item.message())
        yield item


def read_jsonl(path: str | Path) -> Iterator[Document]:
    return load_corpus(Path(path))


def read_pubtator(path: str | Path) -> Iterator[Document]:
    return (document for document, _ in iter_pubtator(path))


def dedupe(documents: Iterable[Document]) -> tuple[list[Document], list[str]]:
    """Drop exact repeats (same id, same text), keeping the first; returns ``(documents, skipped
    ids)``. Two different texts under one id raise :class:`CorpusError`."""
    seen: dict[str, str] = {}
    kept: list[Document] = []
    skipped: list[str] = []
    for document in documents:
        previous = seen.get(document.id)
        if previous is None:
            seen[document.id] = document.text
            kept.append(document)
        elif previous == document.text:
            skipped.append(document.id)
        else:
            raise CorpusError(f"document id {document.id!r} is used for two different texts")
    return kept, skipped


def synthetic_documents(n: int, seed: int = 0, median_words: int = 220, sigma: float = 0.6) -> list[Document]:
    """``n`` documents of log-normally varied length (median ``median_words``, like MEDLINE abstracts),
    with words drawn from the bundled sample's running text (so each word comes as often as it
    does there: frequent short words included), which keeps tokens per word close to real abstracts."""
    if n < 0:
        raise ValueError("n must be >= 0")
    vocab = [w for d in load_corpus("sample") for w in d.text.split()]
    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.lognormal(np.log(median_words), sigma, n).astype(np.int64), 5, 20 * median_words)
    words = np.asarray(vocab, dtype=object)[rng.integers(0, len(vocab), int(lengths.sum()))]
    text = " ".join(words.tolist())
    # Character offsets of document boundaries: each word is followed by one space.
    word_ends = np.cumsum(np.fromiter((len(w) + 1 for w in words), dtype=np.int64, count=len(words)))
    bounds = np.concatenate(([0], word_ends[np.cumsum(lengths) - 1]))
    return [Document(f"syn{i:07d}", text[bounds[i] : bounds[i + 1] - 1]) for i in range(n)]
