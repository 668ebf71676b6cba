"""Value types: documents, entities and relationships, each traceable to its document id."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Document:
    """One input document. ``text`` is what the model reads; ``id`` is unique within a corpus."""

    id: str
    text: str
    title: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise ValueError(f"document id must be a non-empty string, got {self.id!r}")
        if not isinstance(self.text, str):
            raise TypeError(f"document {self.id!r}: text must be str, got {type(self.text).__name__}")


@dataclass(frozen=True, slots=True)
class Entity:
    """An entity mention found in one document (``source_document_id``); ``pass_no``: the
    extraction pass that found it (1 unless ``ExtractionSettings.passes`` asks for more)."""

    text: str
    type: str
    source_document_id: str
    confidence: float | None = None
    start: int | None = None
    end: int | None = None
    pass_no: int = 1


@dataclass(frozen=True, slots=True)
class Dropped:
    """A mention validation did not keep for ``source_document_id``: ``why`` is ``leak`` (its text
    is in another document of the batch, ``found_in``) or ``ungrounded`` (in no document)."""

    text: str
    type: str
    source_document_id: str
    why: str
    found_in: str | None = None


@dataclass(frozen=True, slots=True)
class Relationship:
    """A typed relation between two entity texts of the same document."""

    source: str
    target: str
    type: str
    source_document_id: str
    confidence: float | None = None


def normalise(text: str) -> str:
    """``text`` as mentions are compared: case folded, runs of whitespace one space, no outer space."""
    return " ".join(text.casefold().split())
