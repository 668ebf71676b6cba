"""Reading a source: a named corpus or a file, by suffix or content, as documents and bad records;
the synthetic generator."""


from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

from toolkit.core import Document, Entity
from toolkit.corpora._readers import (
    READERS,
    BadRecord,
    CorpusError,
    Record,
    display_name,
    file_stem,
    head_of,
    iter_conll,
    iter_pubtator,
    open_stream,
)
from toolkit.corpora._registry import corpus_path, get_manifest, manifests

FORMATS = tuple(READERS)
_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".pubtator": "pubtator", ".xml": "pubmed-xml",
             ".conll": "conll", ".bio": "conll"}


def _sniff(head: bytes) -> str | None:
    if b"\x00" in head:  # binary content
        return None
    text = head.decode("utf-8", errors="replace")
    first = next((line for line in text.splitlines() if line.strip()), "")
    parts = first.split("|", 2)
    if len(parts) == 3 and parts[1] in ("t", "a"):
        return "pubtator"
    if first.lstrip().startswith("{"):
        return "jsonl"
    if first.lstrip().startswith("<?xml") or "<PubmedArticle" in text:
        return "pubmed-xml"
    if "\t" in first and len(first.split("\t")) == 2:
        return "conll"
    return None


def detect_format(path: Path) -> str:
    """A file's format from its name (``.jsonl``, ``.pubtator``, ``.xml``, ``.conll``/``.bio``, each
    also ``.gz``), else from its first line."""
    name = path.name.lower()
    suffix = Path(name[:-3]).suffix if name.endswith(".gz") else Path(name).suffix
    if suffix in _SUFFIXES:
        return _SUFFIXES[suffix]
    try:
        with open_stream(path) as stream:
            fmt = _sniff(head_of(stream))
    except OSError as exc:
        raise CorpusError(f"{display_name(path)}: cannot read: {exc.strerror or exc}") from None
    if fmt is None:
        raise CorpusError(f"{display_name(path)}: unknown corpus format (expected JSONL, PubTator, CoNLL/BIO or PubMed "
                          "XML; a binary file?)")
    return fmt


def is_stream(path: Path) -> bool:
    """True for a pipe or device (``/dev/stdin``, ``-``): it can be read once, from the start."""
    return str(path) == "-" or (path.exists() and not path.is_file() and not path.is_dir())


def resolve(source: str | Path, fmt: str | None = None) -> tuple[Path, str]:
    """``(file, format)`` of a corpus name or path (``-`` is standard input). ``fmt`` overrides the
    format found from the name or content, and is required for a pipe without a telling name."""
    if fmt is not None and fmt not in FORMATS:
        raise CorpusError(f"unknown corpus format {fmt!r}; formats: {', '.join(FORMATS)}")
    manifest = get_manifest(str(source))
    if manifest is not None:
        return corpus_path(manifest.name), fmt or manifest.format
    path = Path("/dev/stdin") if str(source) == "-" else Path(source)
    if is_stream(path):
        name = path.name.lower()
        suffix = Path(name[:-3]).suffix if name.endswith(".gz") else Path(name).suffix
        fmt = fmt or _SUFFIXES.get(suffix)
        if fmt is None:
            raise CorpusError(f"{display_name(path)} is a pipe: its content can be read only once, so give its format "
                              f"(--format {'|'.join(FORMATS)})")
        return path, fmt
    if not path.exists():
        raise CorpusError(f"corpus {display_name(source)!r}: no such file and not a known corpus "
                          f"({', '.join(manifests())})")
    if path.is_dir():
        raise CorpusError(f"{display_name(path)}: is a directory, expected a corpus file")
    return path, fmt or detect_format(path)


def iter_records(source: str | Path, fmt: str | None = None) -> Iterator[Record]:
    """Documents and bad records of ``source``, streamed in file order. A missing file, an unknown
    format or an unreadable file raises at once, before iteration; damage found while reading
    raises :class:`CorpusDamaged` after the records before it."""
    path, fmt = resolve(source, fmt)
    try:
        stream = open_stream(path)
    except OSError as exc:
        raise CorpusError(f"{display_name(path)}: cannot read: {exc.strerror or exc}") from None
    return _records(stream, path, fmt)


def _records(stream: BinaryIO, path: Path, fmt: str) -> Iterator[Record]:
    with stream:
        for item in READERS[fmt](stream, display_name(path), file_stem(path)):
            yield item[0] if isinstance(item, tuple) else item


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
