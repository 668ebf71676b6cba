"""Validation: a reply's records checked against its batch. Unknown ids are dropped, missing ids
left out (the executor re-sends them), and every entity kept only if its text occurs in its own
document (grounding: its offsets recorded). An entity found only in another document of the batch
is a cross-document *leak*: counted, never stored under the wrong id."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from toolkit.core import (
    BatchExtractionResult,
    Counts,
    Document,
    DocumentBatch,
    Dropped,
    Entity,
    Relationship,
    normalise,
)
from toolkit.extraction._abbreviations import expand
from toolkit.extraction._adapter import RawReply
from toolkit.extraction._prompt import DocumentOut, EntityOut, RelationshipOut
from toolkit.extraction._settings import ExtractionSettings
from toolkit.store import MAX_MENTION_CHARS, MAX_TYPE_CHARS


def _locate(mention: str, text: str) -> tuple[int, int] | None:
    """Offsets of ``mention`` in ``text``, ignoring case and runs of whitespace; None if absent."""
    words = mention.split()
    if not words:
        return None
    pattern = r"\s+".join(re.escape(w) for w in words)
    match = re.search(pattern, text, re.IGNORECASE)
    return (match.start(), match.end()) if match else None


@dataclass
class ValidatedBatch:
    entities: dict[str, list[Entity]] = field(default_factory=dict)
    relationships: dict[str, list[Relationship]] = field(default_factory=dict)
    counts: Counts = field(default_factory=Counts)
    missing_ids: list[str] = field(default_factory=list)
    dropped: dict[str, list[Dropped]] = field(default_factory=dict)  # leaked and ungrounded mentions, per document
    unknown: list[str] = field(default_factory=list)  # ids in the reply that name no document of the batch
    last_record: str | None = None  # the document of the reply's last record, if that record was kept

    def drop_last_record(self) -> None:
        """A reply cut off by ``max_tokens`` (or mended by json-repair, which closes what was cut):
        its last record may be incomplete, so that document counts as missing (the executor
        re-sends it) instead of being stored with part of its entities. A last record that was
        not kept (cut before its list of entities) is missing already."""
        doc_id, self.last_record = self.last_record, None
        if doc_id is None or doc_id not in self.entities:
            return
        self.counts.entities -= len(self.entities.pop(doc_id))
        self.relationships.pop(doc_id, None)
        self.dropped.pop(doc_id, None)
        self.missing_ids.append(doc_id)
        self.counts.missing_ids += 1

    def merge(self, other: ValidatedBatch) -> None:
        """Add another call's findings (one document's answer in the parallel layout) to this batch's."""
        self.entities.update(other.entities)
        self.relationships.update(other.relationships)
        self.dropped.update(other.dropped)
        self.unknown.extend(other.unknown)
        self.counts = self.counts + other.counts

    def add_abbreviations(self, documents: Sequence[Document]) -> None:
        """Each answered document's mentions with the other form of the abbreviations it defines
        (:func:`toolkit.extraction._abbreviations.expand`), counted."""
        for document in documents:
            if document.id in self.entities:
                added = expand(document, self.entities[document.id])
                self.entities[document.id].extend(added)
                self.counts.abbreviations += len(added)

    def records(self, documents: Sequence[Document]) -> list[DocumentOut]:
        """The answer as kept, one record per answered document of ``documents``, in their order."""
        return [DocumentOut(id=d.id, entities=[EntityOut(text=e.text, type=e.type) for e in self.entities[d.id]],
                            relationships=[RelationshipOut(source=r.source, target=r.target, type=r.type)
                                           for r in self.relationships.get(d.id, [])])
                for d in documents if d.id in self.entities]

    def settle(self, documents: Sequence[Document]) -> None:
        """Recount after merging: documents of ``documents`` without a record are missing."""
        self.missing_ids = [d.id for d in documents if d.id not in self.entities]
        self.counts.missing_ids = len(self.missing_ids)
        self.counts.entities = sum(len(v) for v in self.entities.values())


def _as_str(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def _matcher(documents: Sequence[Document]) -> Any:
    """A reply's id -> the batch's document: the id exactly as given, else with surrounding
    whitespace ignored on both sides when that names exactly one document."""
    exact = {d.id: d for d in documents}
    loose: dict[str, list[Document]] = {}
    for d in documents:
        loose.setdefault(d.id.strip(), []).append(d)

    def match(value: Any) -> Document | None:
        if not isinstance(value, str):
            return None
        if value in exact:
            return exact[value]
        candidates = loose.get(value.strip(), [])
        return candidates[0] if len(candidates) == 1 else None

    return match


def validate_reply(reply: RawReply, documents: Sequence[Document], settings: ExtractionSettings) -> ValidatedBatch:
    """Check a reply against its batch: ids, types, grounding and leaks (see module docstring). A
    record without a list of entities says nothing about its document: it counts as malformed and
    the document as missing (re-sent), never as "no entities"."""
    out = ValidatedBatch()
    counts = out.counts
    counts.repaired = int(reply.repaired)
    by_id = {d.id: d for d in documents}
    match = _matcher(documents)
    allowed = set(settings.entity_types)
    for item in reply.items:
        out.last_record = None
        raw_id = item.get("id") if isinstance(item, dict) else None
        if _as_str(raw_id) is None or not isinstance(item.get("entities"), list):
            counts.malformed_records += 1
            continue
        document = match(raw_id)
        if document is None:
            counts.unknown_ids += 1
            out.unknown.append(str(raw_id)[:80])
            continue
        doc_id = out.last_record = document.id
        if doc_id in out.entities:
            counts.duplicate_records += 1
        kept = out.entities.setdefault(doc_id, [])
        seen = {(normalise(e.text), e.type) for e in kept}
        for raw in item["entities"]:
            mention = _as_str(raw.get("text")) if isinstance(raw, dict) else None
            etype = (_as_str(raw.get("type")) or "").upper() if isinstance(raw, dict) else ""
            if mention is None or etype not in allowed or len(mention) > MAX_MENTION_CHARS:
                counts.dropped += 1
                continue
            span = _locate(mention, document.text)
            if span is None:
                found_in = next((i for i, d in by_id.items() if i != doc_id and _locate(mention, d.text)), None)
                counts.leaks += found_in is not None
                counts.ungrounded += found_in is None
                out.dropped.setdefault(doc_id, []).append(
                    Dropped(mention, etype, doc_id, "leak" if found_in else "ungrounded", found_in))
                continue
            key = (normalise(mention), etype)
            if key in seen:
                counts.duplicates += 1
                continue
            seen.add(key)
            confidence = raw.get("confidence")
            kept.append(Entity(mention, etype, doc_id,
                               confidence=float(confidence) if isinstance(confidence, (int, float)) else None,
                               start=span[0], end=span[1]))
        raw_rels = item.get("relationships") if settings.relationships else None
        _keep_relationships(out, doc_id, raw_rels if isinstance(raw_rels, list) else [])
    out.settle(documents)
    return out


def _keep_relationships(out: ValidatedBatch, doc_id: str, raw_rels: list[object]) -> None:
    """The relationships of ``doc_id``'s record that link two of its kept entities; the others are
    counted as dropped."""
    rels = out.relationships.setdefault(doc_id, [])
    names = {normalise(e.text) for e in out.entities[doc_id]}
    for raw in raw_rels:
        source, target, kind = [_as_str(raw.get(k)) if isinstance(raw, dict) else None
                                for k in ("source", "target", "type")]
        if source is None or target is None or kind is None or normalise(source) not in names \
                or normalise(target) not in names:
            out.counts.dropped_relationships += 1
            continue
        rels.append(Relationship(source, target, kind.upper()[:MAX_TYPE_CHARS], doc_id))


def to_result(batch: DocumentBatch, validated: ValidatedBatch,
              usage: tuple[int | None, int | None, int | None]) -> BatchExtractionResult:
    """A :class:`BatchExtractionResult` for the executor: missing ids are simply absent; ``usage``
    is (prompt, output, cached prompt) tokens as the model reported them."""
    return BatchExtractionResult(
        batch.batch_id,
        per_document_entities=validated.entities,
        per_document_relationships=validated.relationships,
        per_document_dropped=validated.dropped,
        success_status=not validated.missing_ids,
        error_message=_missing_message(validated),
        tokens_in=usage[0],
        tokens_out=usage[1],
        tokens_cached=usage[2],
        validation=validated.counts,
    )


def _missing_message(validated: ValidatedBatch) -> str | None:
    """Why documents are missing from a reply, in words a failure reason can carry."""
    if not validated.missing_ids:
        return None
    counts, parts = validated.counts, [f"no usable record for {validated.missing_ids[:5]}"]
    if validated.unknown:
        parts.append(f"the reply named ids that were not asked for: {validated.unknown[:5]}")
    if counts.malformed_records:
        parts.append(f"{counts.malformed_records} records without an id or a list of entities")
    return "; ".join(parts)
