"""Worked examples drawn from annotated documents (labelled few-shot demos, as DSPy's
``LabeledFewShot``): ``shots`` documents of a gold corpus (PubTator or CoNLL/BIO), with their
gold mentions as the answer, shown before every call instead of the built-in example.

Among the documents that mention a requested type and are no longer than the median document (a
demo is paid in every prompt), ``choice`` picks:

* ``random``: a random draw (seed 0);
* ``coverage``: greedily, the document that adds the most mention *forms* not yet shown (each gold
  class, abbreviations, multi-word names, single words, hyphenated and plural forms), ties broken by
  distinct mentions per character: dense documents teach a small model to report every mention.

Either way the same settings always show the same demos. Draw them from a split that is not
evaluated (NCBI disease: its training set, ``ncbi-disease-train``); :func:`demo_ids` tells an
evaluation which ids to keep out.
"""

from __future__ import annotations

import random
import re
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
    return tuple(random.Random(0).sample([demo for demo, _ in candidates], shots))


def pass_demos(source: str, shots: int, entity_types: tuple[str, ...], choice: str = "random",
               passes: int = 1) -> tuple[tuple[Demo, ...], ...]:
    """The worked examples of each pass: ``shots`` documents per pass, none shown twice (a fresh
    extraction is only worth merging if it sees other examples). Pass 1's are :func:`gold_demos`'
    ``shots`` (either choice draws in order, so asking for more passes keeps pass 1's)."""
    drawn = gold_demos(source, shots * passes, entity_types, choice)
    return tuple(drawn[i * shots:(i + 1) * shots] for i in range(passes))


def demo_ids(settings: ExtractionSettings) -> set[str]:
    """The ids of every document ``settings`` shows as a worked example (any pass, its program's too)."""
    shown = load_program(settings.program).demo_ids() if settings.program else set()
    if not settings.demos:
        return shown
    groups = pass_demos(settings.demos, settings.shots, settings.entity_types, settings.demo_choice, settings.passes)
    return shown | {d.id for group in groups for d, _ in group}
