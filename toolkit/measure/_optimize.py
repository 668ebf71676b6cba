"""``optimize``: compile the batch extractor with a DSPy optimizer against strict F1 on annotated
training documents, scored on development documents (``python -m toolkit optimize``), and save
the program (:mod:`toolkit.extraction._program`) that ``--program`` applies.

One example is one training document asked alone (through ``dspy.Predict``, so the optimizer
sees its trace), its gold mentions the answer. ``bootstrap`` is DSPy's
``BootstrapFewShotWithRandomSearch``: candidate sets of labelled demos (gold answers) and
bootstrapped ones (the model's own answers that scored at least :data:`KEEP_F1` on their
document, as validated: grounded mentions only), each scored on the development documents, the
best kept. (MIPROv2, which also proposes instructions, is not offered yet: the emulated LM cannot
write instructions and it is unmeasured on the local model.) The metric is a document's strict
F1 (1.0 for an empty answer to a document without mentions). The optimizer never sees a held-out
split: ``test`` files are refused.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import dspy

from toolkit.core import Document, Entity
from toolkit.corpora import gold_mapping, iter_gold
from toolkit.extraction import DocumentIn, DocumentOut, EntityOut, ExtractionSettings, save_program
from toolkit.jobs import extractor_for
from toolkit.lm import resolve_lm
from toolkit.measure._evaluation import score

OPTIMIZERS = ("bootstrap",)  # MIPROv2 next: its proposer needs an LM that writes instructions (not measured yet)
KEEP_F1 = 0.5  # a bootstrapped answer becomes a demo when its document's strict F1 reaches this


class Student(dspy.Module):
    """The batch extractor as DSPy's optimizers call it: ``documents`` (``DocumentIn`` or their
    dicts) in, the extractor's prediction (``validated``, ``results``) out."""

    def __init__(self, settings: ExtractionSettings) -> None:
        super().__init__()
        self.extractor = extractor_for(settings, "packed")

    def forward(self, documents: Sequence[Any], entity_types: Sequence[str] | None = None) -> dspy.Prediction:
        return self.extractor([Document(str(_field(d, "id")), str(_field(d, "text"))) for d in documents])


def _field(item: Any, name: str) -> Any:
    return item[name] if isinstance(item, Mapping) else getattr(item, name)


def strict_f1(example: dspy.Example, prediction: dspy.Prediction, trace: Any = None) -> float:
    """The strict F1 of the example's documents (distinct mentions, as ``eval`` scores them)."""
    types = tuple(example.entity_types)
    gold = {str(_field(r, "id")): [Entity(str(_field(e, "text")), str(_field(e, "type")), str(_field(r, "id")))
                                   for e in _field(r, "entities")] for r in example.results}
    found = {doc_id: prediction.validated.entities.get(doc_id, []) for doc_id in gold}
    if not any(gold.values()) and not any(found.values()):
        return 1.0
    return score(gold, found, types, gold_map=None).f1


def examples(source: str, limit: int | None, types: Sequence[str] | None = None,
             skip: Collection[str] = ()) -> list[dspy.Example]:
    """The first ``limit`` annotated documents of ``source`` not in ``skip`` as examples (gold
    types mapped)."""
    pairs = [p for p in iter_gold(source) if p[0].id not in skip][: limit or None]
    if not pairs:
        raise ValueError(f"{source}: no annotated documents")
    mapping, scored = gold_mapping(e.type for _, gold in pairs for e in gold)
    asked = tuple(types or scored)
    out = []
    for document, gold in pairs:
        mentions: dict[str, str] = {}
        for e in sorted(gold, key=lambda e: (e.start is None, e.start or 0)):
            if mapping.get(e.type, e.type.upper()) in asked:
                mentions.setdefault(e.text, mapping.get(e.type, e.type.upper()))
        answer = DocumentOut(id=document.id, entities=[EntityOut(text=t, type=k) for t, k in mentions.items()])
        out.append(dspy.Example(documents=[DocumentIn(id=document.id, text=document.text)], entity_types=list(asked),
                                results=[answer]).with_inputs("documents", "entity_types"))
    return out


def _held_out(source: str) -> bool:
    return Path(source).name.partition(".")[0] == "test" or source.endswith("-test")


def _compile(student: Student, train: list[dspy.Example], dev: list[dspy.Example], shots: int,
             candidates: int) -> Student:
    search = dspy.BootstrapFewShotWithRandomSearch(
        metric=strict_f1, metric_threshold=KEEP_F1, max_bootstrapped_demos=shots, max_labeled_demos=shots,
        num_candidate_programs=candidates, num_threads=1)
    return search.compile(student, trainset=train, valset=dev)


def optimize(gold: str, dev: str, lm: str = "local", out: str | Path = "program.json", optimizer: str = "bootstrap",
             shots: int = 2, limit: int | None = 24, dev_limit: int | None = 16, candidates: int = 4,
             types: Sequence[str] | None = None, api_base: str | None = None) -> dict[str, Any]:
    """Compile the extractor on the first ``limit`` documents of ``gold`` (training split) with
    ``optimizer``, scoring candidates on the first ``dev_limit`` documents of ``dev`` that are not
    among them (``dev`` may be the training split too: its next documents); save the
    best program to ``out``. Returns what was done: the program's path, the development score of
    the compiled program and of the uncompiled one (the same settings, its usual demos), the
    demos' document ids, seconds."""
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; optimizers: {', '.join(OPTIMIZERS)}")
    if held := [s for s in (gold, dev) if _held_out(s)]:
        raise ValueError(f"{held[0]} is a held-out test split: compile on the training split and score on the "
                         "development set only")
    train_set = examples(gold, limit, types)
    dev_set = examples(dev, dev_limit, types, skip={e.documents[0].id for e in train_set})
    settings = ExtractionSettings(entity_types=tuple(train_set[0].entity_types), relationships=False)
    started = time.monotonic()
    resolved = resolve_lm(lm, prompt_cache=True, api_base=api_base)
    evaluate = dspy.Evaluate(devset=dev_set, metric=strict_f1, num_threads=1, display_progress=False)
    with dspy.context(lm=resolved.lm):
        baseline = float(evaluate(Student(settings)).score) / 100  # DSPy reports a percentage
        compiled = _compile(Student(settings), train_set, dev_set, shots, candidates)
        best = float(evaluate(compiled).score) / 100
    state = compiled.extractor.dump_state()
    meta = {"optimizer": optimizer, "gold": gold, "dev": dev, "lm": lm, "model_id": resolved.model_id,
            "train_documents": len(train_set), "dev_documents": len(dev_set), "shots": shots,
            "candidates": candidates, "dev_score": best, "uncompiled_dev_score": baseline,
            "metric": "mean strict F1 per development document"}
    path = save_program(out, settings.to_dict(), state, meta)
    from toolkit.extraction import load_program

    return {**meta, "program": str(path), "demo_ids": sorted(load_program(path).demo_ids()),
            "seconds": round(time.monotonic() - started, 1)}
