"""The entity viewer's HTML: highlights by offsets and outcome, escaping, ordering."""

from __future__ import annotations

import re

import pytest

from toolkit.core import Dropped, Entity
from toolkit.notebook._viewer import ORDERS, order, render_comparison, render_document, spans

TEXT = "Cystic fibrosis (CF) is common; CF patients and asthma."


def ent(text: str, doc: str = "d", start: int | None = None, kind: str = "DISEASE") -> Entity:
    return Entity(text, kind, doc, start=start, end=None if start is None else start + len(text))


def test_every_occurrence_of_a_kept_mention_is_marked_and_longer_spans_win() -> None:
    found = spans(TEXT, [ent("CF"), ent("Cystic fibrosis"), ent("fibrosis")])
    assert [(TEXT[s.start:s.end], s.kind) for s in found] == [("Cystic fibrosis", "kept"), ("CF", "kept"),
                                                              ("CF", "kept")]


def test_true_false_positives_and_missed_gold_have_their_own_styles_and_scores() -> None:
    gold = [ent("Cystic fibrosis", start=0), ent("asthma", start=TEXT.index("asthma"))]
    page = render_document("d", TEXT, [ent("Cystic fibrosis"), ent("CF")], gold)
    assert page.count('class="bx-e bx-tp"') == 1 and page.count('class="bx-e bx-fp"') == 2
    assert re.search(r'class="bx-e bx-fn"[^>]*>asthma<', page)
    assert "P 0.50 R 0.50 F1 0.50 (TP 1, FP 1, FN 1)" in page


def test_hostile_text_ids_and_mentions_are_data_never_markup() -> None:
    evil = 'Asthma <script>alert("x")</script> & <img src=x onerror=alert(1)>'
    page = render_document('<b id="x">', evil, [ent("Asthma"), ent("<script>")],
                           dropped=[Dropped("</div><script>", "DISEASE", "d", "leak", '"><svg onload=1>')])
    assert "<script>" not in page and "<img" not in page and "<svg" not in page and '<b id="x">' not in page
    assert "&lt;script&gt;" in page and "&amp;" in page and "&lt;b id=&quot;x&quot;&gt;" in page
    assert "<mark" in page  # the markup is the viewer's own


def test_dropped_mentions_are_listed_with_where_a_leak_came_from() -> None:
    page = render_document("d", TEXT, [], dropped=[Dropped("malaria", "DISEASE", "d", "leak", "d7"),
                                                  Dropped("gout", "DISEASE", "d", "ungrounded")])
    assert "malaria [DISEASE] leak: it is in d7" in page and "gout [DISEASE] ungrounded" in page


def test_a_comparison_shows_both_answers_and_their_agreement() -> None:
    page = render_comparison("d", TEXT, [ent("Cystic fibrosis"), ent("CF")], [ent("Cystic fibrosis")], per_call=8)
    assert "alone (1 per call)" in page and "in its batch (8 per call)" in page and "agreement F1 0.67" in page


def test_documents_are_ordered_and_filtered_for_review() -> None:
    preds = {"a": [ent("asthma", "a")], "b": [], "c": [ent("x", "c")]}
    gold = {"a": [ent("asthma", "a", 0)], "b": [ent("gout", "b", 0)], "c": [ent("y", "c", 0)]}
    dropped = {"c": [Dropped("m", "DISEASE", "c", "leak", "a")] * 2, "a": [Dropped("n", "DISEASE", "a", "leak", "c")]}
    ids = ["a", "b", "c"]
    assert order(ids, preds, "worst F1 first", gold) == ["b", "c", "a"]
    assert order(ids, preds, "leaks", gold, dropped) == ["c", "a"]
    assert order(ids, preds, "zero entities") == ["b"] and order(ids, preds, "corpus order") == ids
    assert set(ORDERS) == {"worst F1 first", "leaks", "zero entities", "corpus order"}
    with pytest.raises(ValueError):
        order(ids, preds, "worst F1 first")
