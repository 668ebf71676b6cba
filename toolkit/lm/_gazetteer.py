"""The emulated provider's extractor: a gazetteer of known entity names, and the documents read
back out of the prompt DSPy formatted (:func:`documents_in_prompt`)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from functools import lru_cache

from toolkit.core import shared_dir

_WORD = re.compile(r"\w+(?:[-'/.]\w+)*|[^\w\s]")


class Gazetteer:
    """Case-insensitive whole-word matcher over known entity names, longest match first.

    Names and documents are split into the same word tokens; a name is looked up as a tuple of
    words starting at each word of the document (dictionary look-ups, not one huge regex)."""

    def __init__(self, names: dict[str, str], source: str) -> None:
        self.source = source
        self.names: dict[tuple[str, ...], str] = {}
        for name, kind in names.items():
            words = tuple(w.casefold() for w in _WORD.findall(name))
            if words and len(name) > 2:
                self.names.setdefault(words, kind)
        self.first = {w[0] for w in self.names}
        self.longest = max((len(w) for w in self.names), default=0)

    def find(self, text: str, limit: int) -> list[tuple[str, str]]:
        spans = [(m.start(), m.end(), m.group(0).casefold()) for m in _WORD.finditer(text)]
        words = [w for _, _, w in spans]
        found: dict[str, tuple[str, str]] = {}
        i = 0
        while i < len(words) and len(found) < limit:
            if words[i] in self.first:
                for n in range(min(self.longest, len(words) - i), 0, -1):
                    kind = self.names.get(tuple(words[i:i + n]))
                    if kind is not None:
                        mention = text[spans[i][0]:spans[i + n - 1][1]]
                        found.setdefault(mention.casefold(), (mention, kind))
                        i += n - 1
                        break
            i += 1
        return list(found.values())


@lru_cache(maxsize=1)
def default_gazetteer() -> Gazetteer:
    """Disease names from NCBI train annotations (in ``../shared``) when present, else a small
    list of common biomedical names shipped in ``data/gazetteer.txt``."""
    from toolkit.corpora import iter_pubtator

    root = shared_dir()
    train = root / "corpora" / "ncbi-disease" / "train.pubtator" if root else None
    if train is not None and train.exists():
        names = {e.text: "DISEASE" for _, gold in iter_pubtator(train) for e in gold}
        return Gazetteer(names, f"NCBI disease train annotations ({train})")
    from toolkit.core import DATA_DIR

    path = DATA_DIR / "gazetteer.tsv"
    rows = (line.split("\t") for line in path.read_text(encoding="utf-8").splitlines()
            if "\t" in line and not line.startswith("#"))
    return Gazetteer({name: etype for name, etype in rows}, str(path))


_DOCS_MARKER = "[[ ## documents ## ]]"


def documents_in_prompt(messages: Iterable[dict[str, str]]) -> list[dict[str, str]]:
    """The ``{id, text}`` documents DSPy formatted into the last user message."""
    content = [m["content"] for m in messages if m["role"] == "user"][-1]
    start = content.find(_DOCS_MARKER)
    if start < 0:
        return []
    body = content[start + len(_DOCS_MARKER):].lstrip()
    docs, _ = json.JSONDecoder().raw_decode(body)
    return [d for d in docs if isinstance(d, dict) and "id" in d]
