"""What to extract and how much output to allow: :class:`ExtractionSettings` and its presets."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from toolkit.core import DEMO_CHOICES, LAYOUTS, DemoChoice, Layout
from toolkit.store import MAX_TYPE_CHARS

PRESETS: dict[str, tuple[str, ...]] = {
    "biomedical": ("GENE", "PROTEIN", "DISEASE", "CHEMICAL", "DRUG", "CELL_TYPE", "ORGANISM"),
    "general": ("PERSON", "ORGANIZATION", "LOCATION", "PRODUCT", "EVENT", "WORK", "OTHER"),
}


@dataclass(frozen=True)
class ExtractionSettings:
    """What to extract and how much output to allow. Serialises to JSON with :func:`asdict`."""

    entity_types: tuple[str, ...] = PRESETS["biomedical"]
    relationships: bool = True
    max_entities_per_doc: int = 20
    max_relationships_per_doc: int = 10
    max_entity_chars: int = 60
    output_tokens_per_doc: int = 256  # max_tokens = 48 + n_docs * this
    temperature: float = 0.0
    adaptive_output: bool = True  # size the output allowance from measured replies (see OutputSizer)
    schema: bool = True  # send a per-batch JSON schema (structured output) when the LM supports it
    demo: bool = True  # show the worked example (DEMO_DOCUMENTS) before every call
    demos: str | None = None  # a gold corpus whose annotated documents replace it (see toolkit.extraction._demos)
    shots: int = 2  # documents drawn from ``demos`` (per pass)
    demo_choice: DemoChoice = "random"  # how they are drawn: random | coverage (see toolkit.extraction._demos)
    passes: int = 1  # extraction passes per batch: each further one shows other demos, merged (see BatchExtractor)
    abbreviations: bool = False  # add the other form of abbreviations the document defines (see _abbreviations)
    program: str | None = None  # a compiled program (python -m toolkit optimize): its demos replace these
    layout: Layout = "auto"  # packed | parallel | auto: the backend's default (Capabilities.layout)

    def __post_init__(self) -> None:
        if not self.entity_types:
            raise ValueError("entity_types must not be empty")
        if any(not t or not isinstance(t, str) or len(t) > MAX_TYPE_CHARS for t in self.entity_types):
            raise ValueError(f"entity types must be non-empty strings of at most {MAX_TYPE_CHARS} characters, "
                             f"got {self.entity_types!r}")
        object.__setattr__(self, "entity_types", tuple(t.upper() for t in self.entity_types))
        if self.layout not in LAYOUTS:
            raise ValueError(f"unknown layout {self.layout!r}; layouts: {', '.join(LAYOUTS)}")
        if self.shots < 1:
            raise ValueError(f"shots must be at least 1, got {self.shots}")
        if self.demo_choice not in DEMO_CHOICES:
            raise ValueError(f"unknown demo choice {self.demo_choice!r}; choices: {', '.join(DEMO_CHOICES)}")
        if self.passes < 1:
            raise ValueError(f"passes must be at least 1, got {self.passes}")
        if self.passes > 1 and not (self.demo and (self.demos or self.program)):
            raise ValueError("passes after the first show other worked examples: give a gold corpus to draw "
                             "them from (demos, e.g. ncbi-disease-train)")

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> ExtractionSettings:
        try:
            return cls(entity_types=PRESETS[name], **overrides)
        except KeyError:
            raise ValueError(f"unknown entity preset {name!r}; presets: {', '.join(PRESETS)}") from None

    def max_tokens(self, n_docs: int) -> int:
        return 48 + n_docs * self.output_tokens_per_doc

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
