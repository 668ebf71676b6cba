"""The prompt: the typed signature, the worked example shown before every call (DSPy's demos) and
the JSON schema each call's reply must follow."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dspy
from pydantic import BaseModel, Field

from toolkit.core import Document
from toolkit.extraction._settings import ExtractionSettings

AnnotatedDocument = tuple[Document, Sequence[tuple[str, str]]]  # a gold document, its (mention, type) pairs


class DocumentIn(BaseModel):
    id: str
    text: str


class EntityOut(BaseModel):
    text: str = Field(description="the mention exactly as written in this document")
    type: str


class RelationshipOut(BaseModel):
    source: str
    target: str
    type: str


class DocumentOut(BaseModel):
    id: str = Field(description="the id of the document these entities were found in")
    entities: list[EntityOut]
    relationships: list[RelationshipOut] = Field(default_factory=list)


class BatchExtraction(dspy.Signature):
    """Extract every mention of the requested entity types from each document separately.

    An entity is a short name or noun phrase (a few words, abbreviations included), never a whole
    sentence. Copy each mention exactly as it is written in that document. Report a document's
    entities only under its own id, never under another document's id; a document that mentions
    none of the types gets an empty list."""

    documents: list[DocumentIn] = dspy.InputField(desc="documents, each with its id")
    entity_types: list[str] = dspy.InputField(desc="the only entity types to report")
    results: list[DocumentOut] = dspy.OutputField(desc="one record per input document, in input order")


# A worked example shown to the model before every call (self-written text; its entities are
# filtered to the requested types). Two documents, so it also shows how ids keep results apart.
DEMO_DOCUMENTS = (
    ("example-1", "Duchenne muscular dystrophy (DMD) is caused by mutations in the DMD gene, which "
                  "encodes dystrophin. Corticosteroids such as prednisone slow the loss of muscle "
                  "strength in boys with DMD."),
    ("example-2", "Mice lacking the Apc gene develop intestinal adenomas. Treatment with aspirin reduced "
                  "polyp number, and macrophages infiltrated the colorectal tumours."),
)
DEMO_ENTITIES = {
    "example-1": (("Duchenne muscular dystrophy", "DISEASE"), ("DMD", "DISEASE"), ("DMD gene", "GENE"),
                  ("dystrophin", "PROTEIN"), ("Corticosteroids", "DRUG"), ("prednisone", "DRUG")),
    "example-2": (("Mice", "ORGANISM"), ("Apc", "GENE"), ("intestinal adenomas", "DISEASE"),
                  ("aspirin", "DRUG"), ("polyp", "DISEASE"), ("macrophages", "CELL_TYPE"),
                  ("colorectal tumours", "DISEASE")),
}
DEMO_RELATIONSHIPS = {"example-1": (("DMD gene", "dystrophin", "ENCODES"), ("prednisone", "DMD", "TREATS")),
                      "example-2": (("aspirin", "polyp", "REDUCES"),)}


def demo_example(settings: ExtractionSettings, annotated: Sequence[AnnotatedDocument] | None = None) -> dspy.Example:
    """The worked example (one DSPy demo): the built-in one, restricted to ``settings``' entity
    types (and relationships); or the ``annotated`` documents with their gold mentions as the
    answer (entities only; see :func:`toolkit.extraction._demos.gold_demos`, which draws them)."""
    builtin = annotated is None
    if annotated is None:
        wanted = set(settings.entity_types)
        annotated = [(Document(i, t), [(m, k) for m, k in DEMO_ENTITIES[i] if k in wanted]) for i, t in DEMO_DOCUMENTS]
    related = builtin and settings.relationships
    answers = [DocumentOut(id=d.id, entities=[EntityOut(text=t, type=k) for t, k in mentions],
                           relationships=_demo_relationships(d.id, {t for t, _ in mentions}) if related else [])
               for d, mentions in annotated]
    return _example([DocumentIn(id=d.id, text=d.text) for d, _ in annotated], settings, answers)


def _demo_relationships(doc_id: str, names: set[str]) -> list[RelationshipOut]:
    return [RelationshipOut(source=a, target=b, type=r) for a, b, r in DEMO_RELATIONSHIPS[doc_id]
            if a in names and b in names]


def _example(documents: Sequence[DocumentIn], settings: ExtractionSettings, results: list[DocumentOut]) -> dspy.Example:
    return dspy.Example(documents=documents, entity_types=list(settings.entity_types),
                        results=results).with_inputs("documents", "entity_types")


def response_schema(ids: Sequence[str], settings: ExtractionSettings) -> dict[str, Any]:
    """JSON schema for one batch's reply: ids and types as enums, every list bounded."""
    entity = {
        "type": "object",
        "properties": {
            "text": {"type": "string", "minLength": 1, "maxLength": settings.max_entity_chars},
            "type": {"type": "string", "enum": list(settings.entity_types)},
        },
        "required": ["text", "type"],
        "additionalProperties": False,
    }
    record: dict[str, Any] = {
        "type": "object",
        "properties": {
            "id": {"type": "string", "enum": list(ids)},
            "entities": {"type": "array", "items": entity, "maxItems": settings.max_entities_per_doc},
        },
        "required": ["id", "entities"],
        "additionalProperties": False,
    }
    if settings.relationships:
        record["properties"]["relationships"] = {
            "type": "array",
            "maxItems": settings.max_relationships_per_doc,
            "items": {
                "type": "object",
                "properties": {k: {"type": "string", "maxLength": settings.max_entity_chars}
                               for k in ("source", "target", "type")},
                "required": ["source", "target", "type"],
                "additionalProperties": False,
            },
        }
        record["required"].append("relationships")
    schema = {
        "type": "object",
        "properties": {"results": {"type": "array", "items": record, "minItems": 1, "maxItems": len(ids)}},
        "required": ["results"],
        "additionalProperties": False,
    }
    return {"type": "json_schema", "json_schema": {"name": "batch_extraction", "schema": schema, "strict": False}}
