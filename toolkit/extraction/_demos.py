"""Worked examples drawn from annotated documents (labelled few-shot demos, as DSPy's
``LabeledFewShot``): ``shots`` documents of a gold corpus (PubTator or CoNLL/BIO), with their
gold mentions as the answer, shown before every call instead of the built-in example.

The documents are drawn at random (seed 0) among those that mention a requested type and are no
longer than the median document (a demo is paid in every prompt), so the same settings always
show the same demos. Draw them from a split that is not evaluated (NCBI disease: its training set,
``ncbi-disease-train``); :func:`demo_ids` tells an evaluation which ids to keep out.
"""

from __future__ import annotations

import random
from functools import lru_cache

from toolkit.core import Document

Demo = tuple[Document, tuple[tuple[str, str], ...]]  # a document, its distinct (mention, type) pairs


@lru_cache(maxsize=8)
def _annotated(source: str) -> tuple[Demo, ...]:
    """Every document of ``source`` with its distinct gold mentions (types mapped to the
    toolkit's), in order of first occurrence."""
    from toolkit.corpora import gold_mapping, iter_gold

    pairs = list(iter_gold(source))
    mapping, _ = gold_mapping(e.type for _, gold in pairs for e in gold)
    out = []
    for document, gold in pairs:
        mentions: dict[str, str] = {}
        for e in sorted(gold, key=lambda e: (e.start is None, e.start or 0)):
            mentions.setdefault(e.text, mapping.get(e.type, e.type.upper()))
        out.append((document, tuple(mentions.items())))
    return tuple(out)


@lru_cache(maxsize=32)
def gold_demos(source: str, shots: int, entity_types: tuple[str, ...]) -> tuple[Demo, ...]:
    """``shots`` annotated documents of ``source`` as worked examples, their mentions restricted
    to ``entity_types`` (see the module docstring for the choice)."""
    wanted = set(entity_types)
    annotated = [(d, tuple(m for m in mentions if m[1] in wanted)) for d, mentions in _annotated(source)]
    pool = [(d, mentions) for d, mentions in annotated if mentions]
    if len(pool) < shots:
        raise ValueError(f"{source}: {len(pool)} annotated documents mention {', '.join(entity_types)}; "
                         f"{shots} demos asked for")
    lengths = sorted(len(d.text) for d, _ in pool)
    median = lengths[len(lengths) // 2]
    short = [item for item in pool if len(item[0].text) <= median]
    return tuple(random.Random(0).sample(short if len(short) >= shots else pool, shots))


def demo_ids(source: str, shots: int, entity_types: tuple[str, ...]) -> set[str]:
    return {d.id for d, _ in gold_demos(source, shots, entity_types)}
