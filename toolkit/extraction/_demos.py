"""Worked examples drawn from annotated documents (labelled few-shot demos, as DSPy's
``LabeledFewShot``): ``shots`` documents of a gold corpus (PubTator or CoNLL/BIO), with their
gold mentions as the answer, shown before every call instead of the built-in example.

Among the documents that mention a requested type and are no longer than the median document (a
demo is paid in every prompt), ``choice`` picks:

* ``random``: a random draw (seed 0);
* ``coverage``: greedily, the document that adds the most mention *forms* not yet shown (each gold
  class, abbreviations, multi-word names, single words, hyphenated and plural forms), ties broken by
  distinct mentions per character: dense documents teach a small model to report every mention;
* ``similar``: for each call, the documents most like the call's own (TF-IDF cosine over words, as
  DSPy's ``KNNFewShot`` does with embeddings; :func:`similar_demos`): the demos differ from call to
  call, so no prompt prefix is shared beyond the instructions.

Random and coverage draw the same demos for the same settings; similar, for the same documents.
Draw them from a split that is not evaluated (NCBI disease: its training set,
``ncbi-disease-train``); :func:`demo_ids` tells an evaluation which ids to keep out.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from collections.abc import Sequence
from functools import lru_cache

from toolkit.core import DEMO_CHOICES, Document
from toolkit.extraction._program import load_program
from toolkit.extraction._settings import ExtractionSettings

Demo = tuple[Document, tuple[tuple[str, str], ...]]  # a document, its distinct (mention, type) pairs
_ABBREVIATION = re.compile(r"[A-Z][A-Z0-9-]{1,7}")


@lru_cache(maxsize=8)
def _annotated(source: str) -> tuple[tuple[Demo, frozenset[str]], ...]:
    """Every document of ``source`` with its distinct gold mentions (types mapped to the
    toolkit's), in order of first occurrence, and the gold classes (unmapped) it mentions."""
    from toolkit.corpora import gold_mapping, iter_gold

    pairs = list(iter_gold(source))
    mapping, _ = gold_mapping(e.type for _, gold in pairs for e in gold)
    out = []
    for document, gold in pairs:
        mentions: dict[str, str] = {}
        for e in sorted(gold, key=lambda e: (e.start is None, e.start or 0)):
            mentions.setdefault(e.text, mapping.get(e.type, e.type.upper()))
        out.append(((document, tuple(mentions.items())), frozenset(e.type for e in gold)))
    return tuple(out)


def _forms(mentions: Sequence[tuple[str, str]], classes: frozenset[str]) -> set[str]:
    """The forms a demo shows: its gold classes and the shapes of its mentions."""
    forms = {f"class:{c}" for c in classes}
    for text, _ in mentions:
        words = text.split()
        forms.add("abbreviation" if _ABBREVIATION.fullmatch(text) else "multi-word" if len(words) > 1 else "word")
        if "-" in text:
            forms.add("hyphenated")
        if words[-1].endswith("s") and not words[-1].endswith("ss"):
            forms.add("plural")
    return forms


def _coverage(pool: list[tuple[Demo, frozenset[str]]], shots: int) -> list[Demo]:
    shown: set[str] = set()
    chosen: list[Demo] = []
    left = list(pool)
    for _ in range(shots):
        best = max(left, key=lambda item: (len(_forms(item[0][1], item[1]) - shown),
                                           len(item[0][1]) / max(1, len(item[0][0].text)), item[0][0].id))
        left.remove(best)
        shown |= _forms(best[0][1], best[1])
        chosen.append(best[0])
    return chosen


@lru_cache(maxsize=32)
def gold_demos(source: str, shots: int, entity_types: tuple[str, ...], choice: str = "random") -> tuple[Demo, ...]:
    """``shots`` annotated documents of ``source`` as worked examples, their mentions restricted
    to ``entity_types``, chosen by ``choice`` (see the module docstring)."""
    if choice not in DEMO_CHOICES:
        raise ValueError(f"unknown demo choice {choice!r}; choices: {', '.join(DEMO_CHOICES)}")
    wanted = set(entity_types)
    annotated = [((d, tuple(m for m in mentions if m[1] in wanted)), classes)
                 for (d, mentions), classes in _annotated(source)]
    pool = [item for item in annotated if item[0][1]]
    if len(pool) < shots:
        raise ValueError(f"{source}: {len(pool)} annotated documents mention {', '.join(entity_types)}; "
                         f"{shots} demos asked for")
    lengths = sorted(len(d.text) for (d, _), _ in pool)
    median = lengths[len(lengths) // 2]
    short = [item for item in pool if len(item[0][0].text) <= median]
    candidates = short if len(short) >= shots else pool
    if choice == "coverage":
        return tuple(_coverage(candidates, shots))
    if choice == "similar":
        raise ValueError("similar demos are drawn for each call's documents: see similar_demos")
    return tuple(random.Random(0).sample([demo for demo, _ in candidates], shots))


def pass_demos(source: str, shots: int, entity_types: tuple[str, ...], choice: str = "random",
               passes: int = 1) -> tuple[tuple[Demo, ...], ...]:
    """The worked examples of each pass: ``shots`` documents per pass, none shown twice (a fresh
    extraction is only worth merging if it sees other examples). Pass 1's are :func:`gold_demos`'
    ``shots`` (either choice draws in order, so asking for more passes keeps pass 1's)."""
    drawn = gold_demos(source, shots * passes, entity_types, choice)
    return tuple(drawn[i * shots:(i + 1) * shots] for i in range(passes))


class _Index:
    """TF-IDF vectors of a pool of demos (words of 3+ letters, lower-cased), for cosine similarity."""

    def __init__(self, pool: Sequence[Demo]) -> None:
        self.pool = list(pool)
        counts = [Counter(_WORD.findall(d.text.lower())) for d, _ in self.pool]
        frequency = Counter(w for c in counts for w in c)
        self.idf = {w: math.log(len(counts) / f) + 1 for w, f in frequency.items()}
        self.vectors = [self.vector(c) for c in counts]

    def vector(self, counts: Counter[str]) -> dict[str, float]:
        weights = {w: n * self.idf.get(w, 0.0) for w, n in counts.items()}
        norm = math.sqrt(sum(v * v for v in weights.values())) or 1.0
        return {w: v / norm for w, v in weights.items() if v}

    def nearest(self, text: str) -> list[Demo]:
        query = self.vector(Counter(_WORD.findall(text.lower())))
        ranked = sorted(range(len(self.pool)), key=lambda i: (-sum(query.get(w, 0.0) * v
                                                                  for w, v in self.vectors[i].items()), i))
        return [self.pool[i] for i in ranked]


_WORD = re.compile(r"[a-z][a-z0-9-]{2,}")


@lru_cache(maxsize=8)
def _index(source: str, entity_types: tuple[str, ...]) -> _Index:
    wanted = set(entity_types)
    pool = [(d, tuple(m for m in mentions if m[1] in wanted)) for (d, mentions), _ in _annotated(source)]
    pool = [item for item in pool if item[1]]
    lengths = sorted(len(d.text) for d, _ in pool)
    median = lengths[len(lengths) // 2] if lengths else 0
    return _Index([item for item in pool if len(item[0].text) <= median])


def similar_demos(source: str, shots: int, entity_types: tuple[str, ...], documents: Sequence[Document],
                  pass_no: int = 1) -> tuple[Demo, ...]:
    """The ``shots`` short annotated documents of ``source`` most like ``documents`` (their text
    together), for pass ``pass_no`` the next ``shots`` after the earlier passes'."""
    ranked = _index(source, entity_types).nearest(" ".join(d.text for d in documents))
    if len(ranked) < shots * pass_no:
        raise ValueError(f"{source}: {len(ranked)} short annotated documents mention {', '.join(entity_types)}; "
                         f"{shots * pass_no} demos asked for")
    return tuple(ranked[(pass_no - 1) * shots:pass_no * shots])


def demo_ids(settings: ExtractionSettings) -> set[str]:
    """The ids of every document ``settings`` may show as a worked example (any pass, its program's
    too; with ``similar`` demos, every document they are drawn from)."""
    shown = load_program(settings.program).demo_ids() if settings.program else set()
    if not settings.demos:
        return shown
    if settings.demo_choice == "similar":
        return shown | {d.id for d, _ in _index(settings.demos, settings.entity_types).pool}
    groups = pass_demos(settings.demos, settings.shots, settings.entity_types, settings.demo_choice, settings.passes)
    return shown | {d.id for group in groups for d, _ in group}
