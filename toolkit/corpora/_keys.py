"""Ids and names as keys: what makes one unusable (an unpaired surrogate, a control character),
and how to show one in a reason or on a terminal (escaped, on one line)."""

from __future__ import annotations

import unicodedata


def has_surrogates(text: str) -> bool:
    """Whether ``text`` holds an unpaired surrogate (a string no store or UTF-8 file can hold)."""
    return any("\ud800" <= c <= "\udfff" for c in text)


def escaped(key: str) -> str:
    """``key`` as one printable line: characters that are not printable (control characters, line
    breaks, unpaired surrogates, ...) escaped as Python writes them (``\\t``, ``\\x01``, ``\\ud800``)."""
    return key if key.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in key)


def quoted(key: str, limit: int = 60) -> str:
    """``key`` quoted and escaped (``repr``), cut to ``limit`` characters: how a reason names an id."""
    return repr(key) if len(key) <= limit else f"{key[:limit]!r}..."


def key_problem(key: str) -> str | None:
    """What makes ``key`` unusable as an id or a name (an unpaired surrogate, a control character),
    phrased to follow "id has", or None."""
    for i, c in enumerate(key):
        if "\ud800" <= c <= "\udfff":
            return f"an unpaired surrogate (U+{ord(c):04X}) at position {i}"
        if unicodedata.category(c) == "Cc":
            return f"a control character (U+{ord(c):04X}) at position {i}"
    return None
