"""Streaming corpus readers: JSONL, PubTator, CoNLL/BIO and PubMed/MEDLINE XML.

Every reader yields one item per record, in file order, holding at most one record in memory. A
record that cannot become a :class:`Document` (malformed JSON, missing id or text, empty or
non-text content, invalid UTF-8, ...) is yielded as a :class:`BadRecord` with its file and line,
so a run can record it as failed with that reason instead of crashing or dropping it silently.
Readers that know gold annotations (PubTator, CoNLL) also yield them: ``iter_pubtator`` and
``iter_conll`` give ``(document, gold entities)`` pairs.
"""

from __future__ import annotations

import gzip
import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from toolkit.documents import Document, Entity


class CorpusError(ValueError):
    """A corpus that cannot be read as asked (or, in strict mode, a bad record)."""


@dataclass(frozen=True)
class BadRecord:
    """A record that could not be read: where it is and why. ``id`` when the record had one."""

    source: str
    line: int
    reason: str
    id: str | None = None

    def message(self) -> str:
        return f"{self.source}:{self.line}: {self.reason}"


Record = Document | BadRecord


def _document(source: str, line: int, doc_id: object, text: object, **extra: object) -> Record:
    if isinstance(doc_id, bool) or not isinstance(doc_id, (str, int)) or str(doc_id).strip() == "":
        return BadRecord(source, line, f"missing or invalid id ({doc_id!r})")
    doc_id = str(doc_id)
    if text is None:
        return BadRecord(source, line, "no 'text'", doc_id)
    if not isinstance(text, str):
        return BadRecord(source, line, f"text is {type(text).__name__}, not a string", doc_id)
    if not text.strip():
        return BadRecord(source, line, "empty text", doc_id)
    if "\x00" in text:
        return BadRecord(source, line, "text contains NUL bytes (binary content?)", doc_id)
    return Document(doc_id, text, **extra)  # type: ignore[arg-type]


def iter_jsonl(path: str | Path) -> Iterator[Record]:
    """One ``{"id", "text", "title"?, ...}`` object per line; other fields become metadata."""
    path = Path(path)
    source = str(path)
    with _open_binary(path) as handle:
        for line_no, raw in enumerate(handle, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield BadRecord(source, line_no, f"invalid UTF-8 at byte {exc.start}")
                continue
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                yield BadRecord(source, line_no, f"malformed JSON ({exc.msg} at column {exc.colno})")
                continue
            if not isinstance(record, dict):
                yield BadRecord(source, line_no, f"a JSON {type(record).__name__}, not an object")
                continue
            title = record.pop("title", None)
            yield _document(source, line_no, record.pop("id", None), record.pop("text", None),
                            title=title if isinstance(title, str) else None, metadata=record)


def iter_pubtator(path: str | Path) -> Iterator[tuple[Document, list[Entity]]]:
    """PubTator records as ``(document, gold mentions)``; the text is ``title + " " + abstract``,
    the frame the format's offsets refer to. Raises :class:`CorpusError` on a malformed line."""
    for item in iter_pubtator_records(path):
        if isinstance(item, BadRecord):
            raise CorpusError(item.message())
        yield item


def iter_pubtator_records(path: str | Path) -> Iterator[tuple[Document, list[Entity]] | BadRecord]:
    path = Path(path)
    source = str(path)
    title: dict[str, str] = {}
    abstract: dict[str, str] = {}
    mentions: list[Entity] = []
    current: str | None = None
    start_line = 0

    def flush() -> Iterator[tuple[Document, list[Entity]] | BadRecord]:
        if current is not None:
            text = f"{title.pop(current, '')} {abstract.pop(current, '')}".strip()
            item = _document(source, start_line, current, text)
            yield item if isinstance(item, BadRecord) else (item, list(mentions))

    with _open_binary(path) as handle:
        for line_no, raw in enumerate(handle, 1):
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as exc:
                yield BadRecord(source, line_no, f"invalid UTF-8 at byte {exc.start}", current)
                continue
            if not line.strip():
                continue
            head = line.split("|", 2)
            if len(head) == 3 and head[1] in ("t", "a") and "\t" not in head[0]:
                if head[0] != current:
                    yield from flush()
                    current, mentions, start_line = head[0], [], line_no
                (title if head[1] == "t" else abstract)[current] = head[2]
                continue
            cols = line.split("\t")
            if len(cols) >= 5 and cols[0] == current and cols[1].isdigit() and cols[2].isdigit():
                mentions.append(Entity(cols[3], cols[4], current, start=int(cols[1]), end=int(cols[2])))
            elif len(cols) < 3:
                yield BadRecord(source, line_no, "not a PubTator title, abstract or mention line", current)
    yield from flush()


def iter_conll(path: str | Path) -> Iterator[tuple[Document, list[Entity]]]:
    """CoNLL/BIO files (``token<TAB>tag`` per line, a blank line between sentences), as WNUT-16
    ships them: each sentence is a document ``<file stem>-<n>`` whose text is its tokens joined by
    spaces; B-/I- spans become gold entities with character offsets."""
    path = Path(path)
    tokens: list[tuple[str, str]] = []
    count = 0

    def flush() -> Iterator[tuple[Document, list[Entity]]]:
        nonlocal count
        if not tokens:
            return
        count += 1
        doc_id = f"{path.stem}-{count:05d}"
        text, entities, pos = "", [], 0
        span: list | None = None
        for token, tag in tokens:
            start = pos + (1 if text else 0)
            text = f"{text} {token}" if text else token
            pos = len(text)
            kind = tag[2:] if len(tag) > 2 and tag[1] == "-" else ""
            if tag.startswith("B-") or (tag.startswith("I-") and (span is None or span[2] != kind)):
                if span:
                    entities.append(span)
                span = [start, pos, kind]
            elif tag.startswith("I-") and span is not None:
                span[1] = pos
            else:
                if span:
                    entities.append(span)
                span = None
        if span:
            entities.append(span)
        yield Document(doc_id, text), [Entity(text[s:e], k, doc_id, start=s, end=e) for s, e, k in entities]
        tokens.clear()

    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            parts = line.rstrip("\r\n").split("\t") if "\t" in line else line.split()
            parts = [p for p in parts if p.strip()] if "\t" in line else parts
            if not parts:
                yield from flush()
                continue
            if len(parts) < 2:
                raise CorpusError(f"{path}:{line_no}: expected 'token<TAB>tag'")
            tokens.append((parts[0], parts[-1]))
    yield from flush()


def iter_pubmed_xml(path: str | Path) -> Iterator[Record]:
    """PubMed/MEDLINE citations (``.xml`` or ``.xml.gz``), streamed with ``iterparse``: the PMID is
    the id, the text is ``title + " " + abstract`` (structured abstracts joined). A citation without
    title and abstract is a :class:`BadRecord`."""
    path = Path(path)
    source = str(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        count = 0
        for _, elem in ET.iterparse(handle, events=("end",)):
            if elem.tag != "PubmedArticle":
                continue
            count += 1
            pmid = elem.findtext("MedlineCitation/PMID")
            article = elem.find("MedlineCitation/Article")
            title = "".join(article.find("ArticleTitle").itertext()).strip() if article is not None and \
                article.find("ArticleTitle") is not None else ""
            parts = [("".join(a.itertext())).strip() for a in elem.iterfind("MedlineCitation/Article/Abstract/AbstractText")]
            abstract = " ".join(p for p in parts if p)
            elem.clear()
            yield _document(source, count, pmid, f"{title} {abstract}".strip(), title=title or None,
                            metadata={"has_abstract": bool(abstract)})


def _open_binary(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")
