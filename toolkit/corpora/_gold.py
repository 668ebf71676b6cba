"""Gold annotation types onto the toolkit's entity types, for the corpora whose types differ.

:func:`gold_mapping` picks the map from the types a corpus actually uses, so an evaluation and the
worked examples drawn from it (:mod:`toolkit.extraction._demos`) ask for and score the same types.
"""

from __future__ import annotations

from collections.abc import Iterable

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
