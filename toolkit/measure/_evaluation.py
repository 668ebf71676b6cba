"""Quality against gold annotations: mention-level precision, recall and F1.

Mentions are compared per document as sets of distinct mentions (a document that names a disease
five times counts it once, as the extractor reports each distinct mention once):

* **strict**: the predicted text equals a gold mention's text exactly;
* **lenient**: equal after case and whitespace normalisation, or one contains the other
  (overlapping spans of the same document).

Only the entity types in ``types`` are scored (for NCBI disease: ``DISEASE``). Gold types are
mapped with ``gold_map`` first (:data:`~toolkit.corpora._gold.NCBI_DISEASE_MAP` maps the corpus's
four disease classes to ``DISEASE``), predicted types with ``type_map`` (the toolkit's preset types
pass unchanged).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass

from toolkit.core import Entity, normalise
from toolkit.corpora import NCBI_DISEASE_MAP

# the gold type maps live with the corpora (toolkit.corpora._gold); importable from here as before
__all__ = ["PRF", "agreement", "by_position", "per_document", "score"]


@dataclass(frozen=True)
class PRF:
    tp: int
    fp: int
    fn: int

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def to_dict(self) -> dict[str, float]:
        return {**asdict(self), "precision": self.precision, "recall": self.recall, "f1": self.f1}


def _match_count(gold: list[str], pred: list[str], lenient: bool) -> int:
    """Greedy one-to-one matching of distinct predicted and gold mentions."""
    free = list(gold)
    hits = 0
    for p in pred:
        for i, g in enumerate(free):
            same = p == g if not lenient else (normalise(p) == normalise(g) or normalise(p) in normalise(g)
                                               or normalise(g) in normalise(p))
            if same:
                hits += 1
                del free[i]
                break
    return hits


def _distinct(mentions: Iterable[str], lenient: bool) -> list[str]:
    seen: dict[str, str] = {}
    for m in mentions:
        seen.setdefault(normalise(m) if lenient else m, m)
    return list(seen.values())


def per_document(gold: Mapping[str, Sequence[Entity]], pred: Mapping[str, Sequence[Entity]],
                 types: Iterable[str] = ("DISEASE",), type_map: Mapping[str, str] | None = None,
                 lenient: bool = False, gold_map: Mapping[str, str] | None = NCBI_DISEASE_MAP) -> dict[str, PRF]:
    """True/false positives and false negatives of each document in ``gold``, in its order (a
    document missing from ``pred`` predicted nothing): what :func:`score` adds up, and what a
    bootstrap over documents (:mod:`toolkit.measure._stats`) resamples."""
    wanted = set(types)
    mapping, gmap = dict(type_map or {}), dict(gold_map or {})
    out = {}
    for doc_id, gold_entities in gold.items():
        g = _distinct((e.text for e in gold_entities if gmap.get(e.type, e.type) in wanted), lenient)
        p = _distinct((e.text for e in pred.get(doc_id, ()) if mapping.get(e.type, e.type) in wanted), lenient)
        hits = _match_count(g, p, lenient)
        out[doc_id] = PRF(hits, len(p) - hits, len(g) - hits)
    return out


def score(gold: Mapping[str, Sequence[Entity]], pred: Mapping[str, Sequence[Entity]],
          types: Iterable[str] = ("DISEASE",), type_map: Mapping[str, str] | None = None,
          lenient: bool = False, gold_map: Mapping[str, str] | None = NCBI_DISEASE_MAP) -> PRF:
    """P/R/F1 over the documents in ``gold`` (micro-averaged: the sums of :func:`per_document`)."""
    docs = per_document(gold, pred, types, type_map, lenient, gold_map).values()
    return PRF(sum(d.tp for d in docs), sum(d.fp for d in docs), sum(d.fn for d in docs))


def by_position(gold: Mapping[str, Sequence[Entity]], pred: Mapping[str, Sequence[Entity]],
                positions: Mapping[str, int], **kwargs: object) -> dict[int, PRF]:
    """Strict P/R/F1 of the documents at each position in their packed batch (0 = first)."""
    out: dict[int, PRF] = {}
    for position in sorted(set(positions.values())):
        ids = [i for i, p in positions.items() if p == position and i in gold]
        out[position] = score({i: gold[i] for i in ids}, pred, **kwargs)  # type: ignore[arg-type]
    return out


def agreement(reference: Mapping[str, Sequence[Entity]], pred: Mapping[str, Sequence[Entity]],
              types: Iterable[str]) -> PRF:
    """How far ``pred`` agrees with the one-document-per-call output on the same documents
    (the reference taken as gold; strict match of distinct mentions)."""
    return score(reference, pred, types=types, gold_map=None)
