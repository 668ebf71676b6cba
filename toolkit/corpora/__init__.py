"""Corpora: streaming readers, named corpora from manifests, and a synthetic generator.

``iter_records(source)`` yields :class:`Document` or :class:`BadRecord` items from a named corpus
(``sample``, ``pubmed21n1298``, ``wnut16``, ``ncbi-disease``, ...) or a file (JSONL, PubTator,
CoNLL/BIO, PubMed XML, by suffix or content). ``load_corpus(source)`` is its strict form: documents
only, :class:`CorpusError` at the first bad record.
"""

from __future__ import annotations

from toolkit.corpora._gold import GOLD_ENV, NCBI_DISEASE_MAP, gold_corpus, gold_mapping
from toolkit.corpora._keys import escaped, has_surrogates, key_problem, quoted
from toolkit.corpora._readers import (
    BadRecord,
    CorpusDamaged,
    CorpusError,
    Record,
    iter_conll,
    iter_jsonl,
    iter_pubmed_xml,
    iter_pubtator,
    iter_pubtator_records,
)
from toolkit.corpora._registry import corpus_path, fetch_corpus, get_manifest, list_corpora, manifests
from toolkit.corpora._selection import ensure_fetched, expected_total, first_documents, selected_records
from toolkit.corpora._sources import (
    FORMATS,
    dedupe,
    detect_format,
    is_stream,
    iter_gold,
    iter_records,
    load_corpus,
    read_jsonl,
    read_pubtator,
    resolve,
    synthetic_documents,
)

__all__ = [
    "FORMATS", "GOLD_ENV", "BadRecord", "CorpusDamaged", "CorpusError", "NCBI_DISEASE_MAP", "Record", "corpus_path",
    "dedupe", "detect_format", "ensure_fetched", "escaped", "expected_total", "fetch_corpus", "first_documents",
    "get_manifest", "gold_corpus", "gold_mapping", "has_surrogates", "is_stream", "iter_conll", "iter_gold",
    "iter_jsonl", "iter_pubmed_xml", "iter_pubtator", "iter_pubtator_records", "iter_records", "key_problem",
    "list_corpora", "load_corpus", "manifests", "quoted", "read_jsonl", "read_pubtator", "resolve",
    "selected_records", "synthetic_documents",
]
