from __future__ import annotations

import json

import pytest

from toolkit.corpora import CorpusError, dedupe, iter_pubtator, load_corpus, read_jsonl, synthetic_documents
from toolkit.documents import Document


def test_bundled_sample_loads():
    documents = list(load_corpus("sample"))
    assert len(documents) == 12 and len({d.id for d in documents}) == 12
    assert all(d.text and d.title for d in documents)


def test_jsonl_keeps_extra_fields_as_metadata(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"id": 7, "text": "t", "source": "x"}) + "\n\n", encoding="utf-8")
    (document,) = read_jsonl(path)
    assert document.id == "7" and document.metadata == {"source": "x"}


def test_jsonl_error_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": "a", "text": "ok"}\n{"id": "b"}\n', encoding="utf-8")
    with pytest.raises(CorpusError, match=r"bad\.jsonl:2"):
        list(read_jsonl(path))


def test_unknown_corpus_is_a_clear_error(tmp_path):
    with pytest.raises(CorpusError, match="no such file"):
        load_corpus(tmp_path / "missing.jsonl")


def test_pubtator_offsets_point_at_the_mentions(ncbi_devel):
    records = list(iter_pubtator(ncbi_devel))
    assert len(records) == 100
    mentions = [(d, m) for d, ms in records for m in ms]
    assert len(mentions) > 500
    assert all(d.text[m.start : m.end] == m.text for d, m in mentions)


def test_dedupe_drops_exact_repeats_and_refuses_conflicts():
    a, b = Document("a", "one"), Document("b", "two")
    kept, skipped = dedupe([a, b, Document("a", "one")])
    assert kept == [a, b] and skipped == ["a"]
    with pytest.raises(CorpusError, match="two different texts"):
        dedupe([a, Document("a", "other")])


def test_synthetic_documents_are_varied_and_deterministic():
    first = synthetic_documents(200, seed=3)
    assert [d.text for d in first] == [d.text for d in synthetic_documents(200, seed=3)]
    lengths = sorted(len(d.text.split()) for d in first)
    assert 150 <= lengths[100] <= 300  # median near 220 words
    assert lengths[-1] > 2 * lengths[10]
    assert all(not d.text.startswith(" ") and not d.text.endswith(" ") for d in first)
    assert synthetic_documents(0) == []
