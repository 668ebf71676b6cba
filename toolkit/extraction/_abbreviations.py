"""Abbreviations a document defines itself, ``long form (SF)`` (Schwartz & Hearst, 2003, the rule
scispaCy's abbreviation detector follows): when the model reported either form, or a mention that
ends the long form, the document's other form is added under the same type. Deterministic and
per document: an added mention occurs in its own document (it is read from it), and a document's
additions are the same alone and in a batch.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace

from toolkit.core import Document, Entity, normalise

_DEFINED = re.compile(r"\(([A-Za-z][A-Za-z0-9-]{1,9})\)")


def long_form(short: str, before: str) -> str | None:
    """The shortest end of ``before`` whose characters cover ``short``'s in order, its first
    character at the start of a word (Schwartz & Hearst's rule), within ``min(len + 5, 2 * len)``
    words; None if there is none or it is no longer than ``short``."""
    words = before.split()
    window = " ".join(words[-min(len(short) + 5, 2 * len(short)):])
    s, i = len(short) - 1, len(window) - 1
    while s >= 0:
        c = short[s].lower()
        if not c.isalnum():
            s -= 1
            continue
        while i >= 0 and (window[i].lower() != c or (s == 0 and i > 0 and window[i - 1].isalnum())):
            i -= 1
        if i < 0:
            return None
        i, s = i - 1, s - 1
    found = window[window.rfind(" ", 0, i + 1) + 1:]
    return found if len(found) > len(short) else None


def definitions(text: str) -> list[tuple[str, str]]:
    """Every ``(short form, long form)`` the text defines, in order."""
    out = []
    for match in _DEFINED.finditer(text):
        found = long_form(match.group(1), text[: match.start()].rstrip())
        if found is not None:
            out.append((match.group(1), found))
    return out


def expand(document: Document, entities: Sequence[Entity]) -> list[Entity]:
    """The mentions to add to ``entities`` (``document``'s, as validated): for each abbreviation
    the document defines whose short form, long form or the end of whose long form was reported,
    the forms not reported yet, with the type and pass of the mention that matched."""
    seen = {normalise(e.text) for e in entities}
    added: list[Entity] = []
    for short, long in definitions(document.text):
        forms = (normalise(short), normalise(long))
        source = next((e for e in entities if normalise(e.text) in forms or forms[1].endswith(" " + normalise(e.text))),
                      None)
        if source is None:
            continue
        for text in (short, long):
            start = document.text.find(text)
            if normalise(text) not in seen and start >= 0:
                seen.add(normalise(text))
                added.append(replace(source, text=text, confidence=None, start=start, end=start + len(text)))
    return added
