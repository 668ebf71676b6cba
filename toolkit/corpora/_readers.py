"""Streaming corpus readers: JSONL, PubTator, CoNLL/BIO and PubMed/MEDLINE XML.

Every reader yields one item per record, in file order, holding at most one record in memory. A
record that cannot become a :class:`Document` (malformed JSON, missing id or text, empty or
non-text content, invalid UTF-8, an unpaired surrogate, a control character in its id, ...) is
yielded as a :class:`BadRecord` with its file and position, so a run can record it as failed with
that reason instead of crashing or dropping it silently. A stream that cannot be read on (a
truncated or corrupt gzip, XML cut off mid-element, a read error) raises :class:`CorpusDamaged`
after the records before the damage, naming the file and position. Compression is recognised by
its magic bytes, so a gzip stream is read as such whatever its name (or from a pipe).
Readers that know gold annotations (PubTator, CoNLL) also yield them: ``iter_pubtator`` and
``iter_conll`` give ``(document, gold entities)`` pairs and raise at the first bad record.
"""

from __future__ import annotations

import gzip
import json
import xml.etree.ElementTree as ET
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from toolkit.core import Document, Entity
from toolkit.corpora._keys import has_surrogates, key_problem, quoted

_GZIP_MAGIC = b"\x1f\x8b"
_STREAM_ERRORS = (EOFError, OSError, zlib.error)  # gzip.BadGzipFile is an OSError


class CorpusError(ValueError):
    """A corpus that cannot be read as asked (or, in strict mode, a bad record)."""


class CorpusDamaged(CorpusError):
    """The stream cannot be read past ``position`` (records before it were yielded)."""

    def __init__(self, source: str, position: str, reason: str) -> None:
        super().__init__(f"{source}: damaged at {position}: {reason}")
        self.source, self.position, self.reason = source, position, reason


@dataclass(frozen=True)
class BadRecord:
    """A record that could not be read: where it is and why. ``id``: the id it gave (a string, or a
    number as text), usable or not (a control character, blank), None without one; the intake
    decides which id its row is stored under. ``line`` is a line number, or the record's number in
    the file for XML (``unit="record"``)."""

    source: str
    line: int
    reason: str
    id: str | None = None
    unit: str = "line"

    def message(self) -> str:
        where = f"{self.source}:{self.line}" if self.unit == "line" else f"{self.source}: record {self.line}"
        return f"{where}: {self.reason}"


Record = Document | BadRecord


def display_name(path: Path | str) -> str:
    """A path as text that can be printed and stored (undecodable bytes of a file name escaped)."""
    return str(path).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace") \
        if has_surrogates(str(path)) else str(path)


def file_stem(path: Path) -> str:
    """``path``'s name without its format suffix (and ``.gz``): what CoNLL sentence ids start with."""
    return Path(path.stem).stem if path.suffix == ".gz" else path.stem


def _document(source: str, line: int, doc_id: object, text: object, unit: str = "line", **extra: Any) -> Record:
    def bad(reason: str, given_id: str | None = None) -> BadRecord:
        return BadRecord(source, line, reason, given_id, unit)

    if isinstance(doc_id, bool) or not isinstance(doc_id, (str, int)) or doc_id == "":
        return bad(f"missing or invalid id ({quoted(doc_id) if isinstance(doc_id, str) else _json_shown(doc_id)})")
    doc_id = str(doc_id)
    if not doc_id.strip():
        return bad(f"id {quoted(doc_id)} is blank", doc_id)
    if problem := key_problem(doc_id):
        return bad(f"id {quoted(doc_id)} has {problem}", doc_id)
    if text is None:
        return bad("no 'text'", doc_id)
    if not isinstance(text, str):
        return bad(f"text is {type(text).__name__}, not a string", doc_id)
    if not text.strip():
        return bad("empty text", doc_id)
    if "\x00" in text:
        return bad("text contains NUL bytes (binary content?)", doc_id)
    if has_surrogates(text):
        at = next(i for i, c in enumerate(text) if "\ud800" <= c <= "\udfff")
        return bad(f"text has an unpaired surrogate (U+{ord(text[at]):04X}) at character {at}", doc_id)
    title = extra.get("title")
    if isinstance(title, str) and has_surrogates(title):
        extra["title"] = None
    return Document(doc_id, text, **extra)


def _json_shown(value: object) -> str:
    """A JSON value that is not a usable id, as written (cut to 60 characters)."""
    text = json.dumps(value, ensure_ascii=True, default=repr)
    return text if len(text) <= 60 else text[:57] + "..."


def open_stream(path: Path) -> BinaryIO:
    """``path`` opened for reading in binary, gunzipped when it starts with gzip's magic bytes (a
    regular file, or a pipe such as ``/dev/stdin``: nothing is read twice)."""
    raw = open(path, "rb")  # closed by the caller
    try:
        head = raw.peek(2)[:2]
    except OSError:
        raw.close()
        raise
    if head == _GZIP_MAGIC:
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    return raw


def head_of(stream: BinaryIO, size: int = 4096) -> bytes:
    """Up to ``size`` bytes at the start of ``stream`` without consuming them."""
    peek: Callable[[int], bytes] | None = getattr(stream, "peek", None)
    if peek is None:  # pragma: no cover - open_stream's streams all peek
        raise TypeError("stream cannot peek")
    try:
        return peek(size)[:size]
    except _STREAM_ERRORS:
        return b""


def _lines(stream: BinaryIO, source: str) -> Iterator[tuple[int, bytes]]:
    """``(line number, raw line)`` of ``stream``; damage raises :class:`CorpusDamaged` at the line
    that could not be read."""
    n = 0
    try:
        for n, raw in enumerate(stream, 1):
            yield n, raw
    except _STREAM_ERRORS as exc:
        raise CorpusDamaged(source, f"line {n + 1}", _why(exc)) from None


def _why(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, EOFError):
        return f"truncated ({text})"
    return f"{type(exc).__name__}: {text}"


def _decode(raw: bytes) -> tuple[str, str | None]:
    """A line as text, and why it is not valid UTF-8 (None if it is); bad bytes become surrogates."""
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        return raw.decode("utf-8", "surrogateescape"), f"invalid UTF-8 at byte {exc.start}"


def iter_jsonl(path: str | Path) -> Iterator[Record]:
    """One ``{"id", "text", "title"?, ...}`` object per line; other fields become metadata."""
    with open_stream(Path(path)) as stream:
        yield from jsonl_records(stream, display_name(path))


def jsonl_records(stream: BinaryIO, source: str) -> Iterator[Record]:
    for line_no, raw in _lines(stream, source):
        line, invalid = _decode(raw)
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            yield BadRecord(source, line_no, invalid or f"malformed JSON ({exc.msg} at column {exc.colno})")
            continue
        if not isinstance(record, dict):
            yield BadRecord(source, line_no, invalid or f"a JSON {type(record).__name__}, not an object")
            continue
        title = record.pop("title", None)
        item = _document(source, line_no, record.pop("id", None), record.pop("text", None),
                         title=title if isinstance(title, str) else None, metadata=record)
        yield BadRecord(source, line_no, invalid, item.id) if invalid else item


def iter_pubtator(path: str | Path) -> Iterator[tuple[Document, list[Entity]]]:
    """PubTator records as ``(document, gold mentions)``; the text is ``title + " " + abstract``,
    the frame the format's offsets refer to. Raises :class:`CorpusError` on a bad record."""
    return _strict_pairs(iter_pubtator_records(path))


def iter_pubtator_records(path: str | Path) -> Iterator[tuple[Document, list[Entity]] | BadRecord]:
    with open_stream(Path(path)) as stream:
        yield from pubtator_records(stream, display_name(path))


def pubtator_records(stream: BinaryIO, source: str) -> Iterator[tuple[Document, list[Entity]] | BadRecord]:
    """A record is the title, abstract and mention lines of one id. A line that belongs to no record
    (a file cut inside an id, a stray line) is a bad record of its own; it never taints its
    neighbours. Invalid UTF-8 in a record's line makes that record bad."""
    title: dict[str, str] = {}
    abstract: dict[str, str] = {}
    mentions: list[Entity] = []
    current: str | None = None
    start_line = 0
    problem: str | None = None

    def flush() -> Iterator[tuple[Document, list[Entity]] | BadRecord]:
        if current is None:
            return
        text = f"{title.pop(current, '')} {abstract.pop(current, '')}".strip()
        if problem is not None:
            yield BadRecord(source, start_line, problem, current)
            return
        item = _document(source, start_line, current, text)
        yield item if isinstance(item, BadRecord) else (item, list(mentions))

    for line_no, raw in _lines(stream, source):
        line, invalid = _decode(raw.rstrip(b"\r\n"))
        if not line.strip():
            continue
        head = line.split("|", 2)
        if len(head) == 3 and head[1] in ("t", "a") and "\t" not in head[0] and head[0]:
            if head[0] != current:
                yield from flush()
                current, mentions, start_line, problem = head[0], [], line_no, None
            (title if head[1] == "t" else abstract)[current] = head[2]
            if invalid and problem is None:
                problem = f"line {line_no}: {invalid}"
            continue
        cols = line.split("\t")
        if current is not None and cols[0] == current and len(cols) >= 4:
            if invalid and problem is None:
                problem = f"line {line_no}: {invalid}"
            if len(cols) >= 5 and cols[1].isdigit() and cols[2].isdigit():
                mentions.append(Entity(cols[3], cols[4], current, start=int(cols[1]), end=int(cols[2])))
            continue
        if current is not None and cols[0] == current and len(cols) == 3:  # a relation line (id, type, ...)
            continue
        yield BadRecord(source, line_no, invalid or "not a PubTator title, abstract or mention line "
                                                    "(a cut or damaged record?)")
    yield from flush()


def iter_conll(path: str | Path) -> Iterator[tuple[Document, list[Entity]]]:
    """CoNLL/BIO files (``token<TAB>tag`` per line, a blank line between sentences), as WNUT-16
    ships them: each sentence is a document ``<file stem>-<n>`` whose text is its tokens joined by
    spaces; B-/I- spans become gold entities with character offsets. Raises at a bad sentence."""
    return _strict_pairs(iter_conll_records(path))


def iter_conll_records(path: str | Path) -> Iterator[tuple[Document, list[Entity]] | BadRecord]:
    path = Path(path)
    with open_stream(path) as stream:
        yield from conll_records(stream, display_name(path), file_stem(path))


def conll_records(stream: BinaryIO, source: str, stem: str) -> Iterator[tuple[Document, list[Entity]] | BadRecord]:
    """Sentences as ``(document, gold)``; a sentence with a line that is not ``token<TAB>tag`` or
    not valid UTF-8 is a bad record under its own id (the numbering of the others is unchanged)."""
    tokens: list[tuple[str, str]] = []
    count = start = 0
    problem: str | None = None

    def flush() -> Iterator[tuple[Document, list[Entity]] | BadRecord]:
        nonlocal count, problem
        if not tokens and problem is None:
            return
        count += 1
        doc_id = f"{stem}-{count:05d}"
        if problem is not None:
            yield BadRecord(source, start, problem, doc_id)
        else:
            yield _sentence(doc_id, tokens)
        tokens.clear()
        problem = None

    for line_no, raw in _lines(stream, source):
        line, invalid = _decode(raw)
        parts = line.rstrip("\r\n").split("\t") if "\t" in line else line.split()
        parts = [p for p in parts if p.strip()] if "\t" in line else parts
        if not parts:
            yield from flush()
            continue
        if not tokens and problem is None:
            start = line_no
        if invalid or len(parts) < 2:
            problem = problem or f"line {line_no}: {invalid or 'expected token<TAB>tag'}"
            continue
        tokens.append((parts[0], parts[-1]))
    yield from flush()


def _sentence(doc_id: str, tokens: list[tuple[str, str]]) -> tuple[Document, list[Entity]]:
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
    return Document(doc_id, text), [Entity(text[s:e], k, doc_id, start=s, end=e) for s, e, k in entities]


def iter_pubmed_xml(path: str | Path) -> Iterator[Record]:
    """PubMed/MEDLINE citations (``.xml`` or ``.xml.gz``), streamed with ``iterparse``: the PMID is
    the id, the text is ``title + " " + abstract`` (structured abstracts joined). A citation without
    title and abstract is a :class:`BadRecord`."""
    with open_stream(Path(path)) as stream:
        yield from pubmed_records(stream, display_name(path))


def pubmed_records(stream: BinaryIO, source: str) -> Iterator[Record]:
    count = 0
    events = ET.iterparse(stream, events=("end",))
    while True:
        try:
            _, elem = next(events)
        except StopIteration:
            return
        except ET.ParseError as exc:
            line, column = exc.position
            raise CorpusDamaged(source, f"line {line}, column {column}", f"XML: {exc}") from None
        except _STREAM_ERRORS as exc:
            raise CorpusDamaged(source, f"record {count + 1}", _why(exc)) from None
        if elem.tag != "PubmedArticle":
            continue
        count += 1
        pmid = elem.findtext("MedlineCitation/PMID")
        pmid = pmid.strip() if pmid else pmid  # the line breaks of an indented file are not the id's
        article = elem.find("MedlineCitation/Article")
        heading = article.find("ArticleTitle") if article is not None else None
        title = "".join(heading.itertext()).strip() if heading is not None else ""
        parts = ["".join(a.itertext()).strip() for a in elem.iterfind("MedlineCitation/Article/Abstract/AbstractText")]
        abstract = " ".join(p for p in parts if p)
        elem.clear()
        yield _document(source, count, pmid, f"{title} {abstract}".strip(), unit="record", title=title or None,
                        metadata={"has_abstract": bool(abstract)})


def _strict_pairs(items: Iterator[tuple[Document, list[Entity]] | BadRecord]
                  ) -> Iterator[tuple[Document, list[Entity]]]:
    for item in items:
        if isinstance(item, BadRecord):
            raise CorpusError(item.message())
        yield item


READERS: dict[str, Callable[[BinaryIO, str, str], Iterator[Any]]] = {
    "jsonl": lambda stream, source, stem: jsonl_records(stream, source),
    "pubtator": lambda stream, source, stem: pubtator_records(stream, source),
    "conll": conll_records,
    "pubmed-xml": lambda stream, source, stem: pubmed_records(stream, source),
}
"""Format -> ``reader(stream, source name, file stem)``: records of that format (gold pairs for
PubTator and CoNLL)."""
