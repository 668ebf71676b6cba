"""Corpus readers (streaming) and a synthetic corpus generator for benchmarks.

``load_corpus(path_or_name)`` accepts a JSONL file (one ``{"id", "text"}`` object per line, optional
``title`` and other fields kept as metadata), a PubTator file, or the name of a bundled sample.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from toolkit.documents import Document, Entity
from toolkit.paths import DATA_DIR

SAMPLES = {"sample": DATA_DIR / "samples" / "biomed-sample.jsonl"}


class CorpusError(ValueError):
    """A corpus file that cannot be read as asked."""


def read_jsonl(path: str | Path) -> Iterator[Document]:
    """Documents of a JSONL file, one per line; blank lines are skipped."""
    path = Path(path)
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                doc_id, text = str(record.pop("id")), record.pop("text")
            except (json.JSONDecodeError, KeyError, AttributeError) as exc:
                raise CorpusError(f"{path}:{line_no}: not a JSON object with 'id' and 'text' ({exc})") from exc
            yield Document(doc_id, text, title=record.pop("title", None), metadata=record)


def iter_pubtator(path: str | Path) -> Iterator[tuple[Document, list[Entity]]]:
    """PubTator records as ``(document, gold mentions)``. The document text is ``title + " " +
    abstract``, the frame the format's character offsets refer to."""
    path = Path(path)
    title: dict[str, str] = {}
    abstract: dict[str, str] = {}
    mentions: list[Entity] = []
    current: str | None = None

    def flush() -> Iterator[tuple[Document, list[Entity]]]:
        if current is not None:
            text = f"{title.get(current, '')} {abstract.get(current, '')}".strip()
            yield Document(current, text, title=title.get(current)), list(mentions)

    with path.open(encoding="utf-8") as handle:
        for line_no, raw in enumerate(handle, 1):
            line = raw.rstrip("\n")
            if not line.strip():
                continue
            head = line.split("|", 2)
            if len(head) == 3 and head[1] in ("t", "a") and "\t" not in head[0]:
                if head[0] != current:
                    yield from flush()
                    current, mentions = head[0], []
                (title if head[1] == "t" else abstract)[current] = head[2]
                continue
            cols = line.split("\t")
            if len(cols) >= 5 and cols[0] == current:
                mentions.append(Entity(cols[3], cols[4], current, start=int(cols[1]), end=int(cols[2])))
            elif len(cols) < 3:
                raise CorpusError(f"{path}:{line_no}: not a PubTator title, abstract or mention line")
    yield from flush()


def read_pubtator(path: str | Path) -> Iterator[Document]:
    return (document for document, _ in iter_pubtator(path))


def _sniff_pubtator(path: Path) -> bool:
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                parts = line.split("|", 2)
                return len(parts) == 3 and parts[1] in ("t", "a")
    return False


def load_corpus(source: str | Path) -> Iterator[Document]:
    """Documents from a bundled sample name, a JSONL file or a PubTator file."""
    path = SAMPLES.get(str(source), Path(source))
    if not path.exists():
        names = ", ".join(sorted(SAMPLES))
        raise CorpusError(f"corpus {source!r}: no such file and not a bundled sample ({names})")
    if path.suffix in (".jsonl", ".json", ".ndjson"):
        return read_jsonl(path)
    if path.suffix == ".pubtator" or _sniff_pubtator(path):
        return read_pubtator(path)
    raise CorpusError(f"{path}: unknown corpus format (expected .jsonl or PubTator)")


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
    with words drawn from the bundled sample's vocabulary so token/word ratios stay realistic."""
    if n < 0:
        raise ValueError("n must be >= 0")
    vocab = sorted({w for d in read_jsonl(SAMPLES["sample"]) for w in d.text.split()})
    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.lognormal(np.log(median_words), sigma, n).astype(np.int64), 5, 20 * median_words)
    words = np.asarray(vocab, dtype=object)[rng.integers(0, len(vocab), int(lengths.sum()))]
    text = " ".join(words.tolist())
    # Character offsets of document boundaries: each word is followed by one space.
    word_ends = np.cumsum(np.fromiter((len(w) + 1 for w in words), dtype=np.int64, count=len(words)))
    bounds = np.concatenate(([0], word_ends[np.cumsum(lengths) - 1]))
    return [Document(f"syn{i:07d}", text[bounds[i] : bounds[i + 1] - 1]) for i in range(n)]
