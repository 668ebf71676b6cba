"""Abbreviations a document defines (``--abbreviations``): the other form is added when the model
reported one, grounded in the document, counted, the same alone and in a batch; nothing is added
from a definition no reported mention touches."""

from __future__ import annotations

import json
from dataclasses import replace

import dspy
import pytest
from dspy.utils.dummies import DummyLM
from hypothesis import given, strategies as st

from toolkit.core import Document, Entity
from toolkit.extraction import ExtractionSettings
from toolkit.extraction._abbreviations import definitions, expand, long_form
from toolkit.jobs import extractor_for

TEXT = ("Duchenne muscular dystrophy (DMD) is caused by mutations in the dystrophin gene. Adenomatous "
        "polyposis coli (APC) and familial adenomatous polyposis (FAP) are related; the p53 protein (TP53) is not.")


@pytest.mark.parametrize("short, before, expected", [
    ("DMD", "Duchenne muscular dystrophy", "Duchenne muscular dystrophy"),
    ("FAP", "are related to familial adenomatous polyposis", "familial adenomatous polyposis"),
    ("G6PD", "deficiency of glucose-6-phosphate dehydrogenase", "glucose-6-phosphate dehydrogenase"),
    ("XYZ", "nothing alike here", None),
    ("DM", "D", None),  # a long form must be longer than its short form
])
def test_the_long_form_is_schwartz_and_hearsts(short: str, before: str, expected: str | None) -> None:
    assert long_form(short, before) == expected


def test_a_reported_form_brings_the_other_with_its_type_and_offsets() -> None:
    document = Document("d1", TEXT)
    assert [s for s, _ in definitions(TEXT)] == ["DMD", "APC", "FAP", "TP53"]
    reported = [Entity("Duchenne muscular dystrophy", "DISEASE", "d1", pass_no=2), Entity("APC", "DISEASE", "d1"),
                Entity("adenomatous polyposis", "DISEASE", "d1")]  # ends the long form of FAP
    added = expand(document, reported)
    assert [(e.text, e.type, e.pass_no) for e in added] == [
        ("DMD", "DISEASE", 2), ("Adenomatous polyposis coli", "DISEASE", 1), ("FAP", "DISEASE", 1),
        ("familial adenomatous polyposis", "DISEASE", 1)]
    assert all(TEXT[e.start:e.end] == e.text for e in added)  # grounded: read from the document
    assert expand(document, added + reported) == []  # nothing twice
    assert expand(document, [Entity("dystrophin", "PROTEIN", "d1")]) == []  # TP53 is defined, not reported


@given(st.text(alphabet=st.sampled_from("ab (DMD)xyz-AP)("), max_size=80))
def test_every_added_mention_occurs_in_its_own_document(text: str) -> None:
    document = Document("d", text)
    reported = [Entity(w, "DISEASE", "d") for w in set(text.split()) if w]
    for e in expand(document, reported):
        assert e.start is not None and text[e.start:e.end] == e.text


def test_the_extractor_adds_and_counts_them_only_when_asked() -> None:
    found = [{"text": "Duchenne muscular dystrophy", "type": "DISEASE"}]
    reply = {"results": json.dumps([{"id": "d1", "entities": found}])}
    settings = ExtractionSettings(entity_types=("DISEASE",), relationships=False, abbreviations=True)
    with dspy.context(lm=DummyLM([reply, reply])):
        on = extractor_for(settings)([Document("d1", TEXT)]).validated
        off = extractor_for(replace(settings, abbreviations=False))([Document("d1", TEXT)]).validated
    assert [e.text for e in on.entities["d1"]] == ["Duchenne muscular dystrophy", "DMD"]
    assert (on.counts.abbreviations, on.counts.entities) == (1, 2)
    assert [e.text for e in off.entities["d1"]] == ["Duchenne muscular dystrophy"] and off.counts.abbreviations == 0
