"""What ``plan`` returns: a frozen value, turned into JSON only where ``plan.json`` is written or read."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_OUTPUT_PER_DOC = 60.0  # output tokens per document, assumed when no eval run says better

Row = dict[str, Any]  # a row of the grid, a measured candidate, a recommendation: a table's row


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class Plan:
    """The grid of predicted settings, the bench's measured configurations as candidates, the fastest
    allowed one (``recommendation``), the money picks, and (with an eval run) predicted against
    measured speedups. Rows are mappings of the columns :data:`~toolkit.plan.GRID_COLUMNS` and
    :data:`~toolkit.plan.MEASURED_COLUMNS` name (and more)."""

    profile: Mapping[str, Any]
    corpus: str
    corpus_tokens: Mapping[str, float]
    layout: str
    prompt_tokens: int
    per_document_tokens: int
    output_tokens_per_doc: float
    output_per_doc_source: str
    output_sd_per_doc: float | None
    max_f1_drop_points: float
    quality_source: str
    quality_judgement: str
    recommendation: Row
    grid: tuple[Row, ...]
    measured: tuple[Row, ...]
    bench: str | None
    money: Mapping[str, Any]
    predicted_vs_measured: tuple[Row, ...] | None = None  # with an eval run only
    kind: str = field(default="plan", repr=False)

    def to_json(self) -> dict[str, Any]:
        """``plan.json``'s object."""
        data = {"kind": self.kind, **{f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                                      if f.name != "kind"}}
        if self.predicted_vs_measured is None:
            del data["predicted_vs_measured"]
        return _plain(data)

    @classmethod
    def from_json(cls, data_or_path: Mapping[str, Any] | str | Path) -> Plan:
        """A plan as ``plan.json`` has it (a mapping, or the path of the file)."""
        data = data_or_path if isinstance(data_or_path, Mapping) else json.loads(Path(data_or_path).read_text())
        names = {f.name for f in dataclasses.fields(cls)}
        rows = {k: tuple(data[k]) for k in ("grid", "measured", "predicted_vs_measured") if data.get(k) is not None}
        return cls(**{**{k: v for k, v in data.items() if k in names}, **rows})
