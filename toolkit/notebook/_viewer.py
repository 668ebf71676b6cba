"""The entity viewer: documents as HTML with each kept entity highlighted in its text, by type.

In the spirit of spaCy's displaCy and LangExtract's visualisation, with no CDN and no script: one
``<style>`` block and spans. Against gold annotations a predicted mention is a true positive (its
text is a gold mention's, the strict rule of :func:`toolkit.measure._evaluation.score`) or a false positive,
and a gold mention nobody predicted is shown as missed, each in its own style; the header has the
document's P/R/F1. What validation did not keep is listed under the text (leaks with the document
they were found in, ungrounded mentions). :func:`render_comparison` puts a document's answer alone
and in its batch side by side. A document's text, ids and mentions are data: every piece of them is
escaped, never markup.
"""

from __future__ import annotations

import hashlib
import html
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from toolkit.core import Dropped, Entity
from toolkit.measure import PRF, score

if TYPE_CHECKING:
    import ipywidgets
    import polars as pl

    from toolkit.jobs import RunResult
    from toolkit.notebook._views import GoldSample

STYLE = """<style>
.bx-doc{font:14px/1.7 system-ui,sans-serif;border:1px solid #ddd;border-radius:6px;padding:10px 14px;margin:8px 0}
.bx-head{font-weight:600;margin-bottom:6px}.bx-meta{color:#666;font-weight:400;margin-left:8px}
.bx-e{padding:1px 4px;border-radius:4px;margin:0 1px}\
.bx-e sub{font-size:10px;font-weight:600;margin-left:3px;opacity:.7}
.bx-fp{outline:2px dashed #c62828}.bx-fn{background:none!important;border-bottom:3px wavy #c62828}
.bx-drop{color:#555;font-size:12px;margin-top:6px}.bx-pair{display:flex;gap:12px}.bx-pair>div{flex:1;min-width:0}
.bx-legend span{margin-right:10px}
</style>"""
_Item = TypeVar("_Item", Entity, Dropped)
_PALETTE = ("#ffe08a", "#b5e3ff", "#c8f7c5", "#ffc9de", "#e0d4ff", "#ffd8b1", "#d4f0f0", "#f0e6c8")


def type_colour(entity_type: str) -> str:
    """A stable colour per entity type (the same type has the same colour in every view)."""
    return _PALETTE[int(hashlib.sha1(entity_type.encode()).hexdigest(), 16) % len(_PALETTE)]


@dataclass(frozen=True)
class Span:
    start: int
    end: int
    type: str
    kind: str  # kept (no gold), tp, fp or fn


def _occurrences(mention: str, text: str) -> list[tuple[int, int]]:
    """Every place ``mention`` occurs in ``text`` (case and runs of whitespace ignored)."""
    words = mention.split()
    if not words:
        return []
    pattern = r"\s+".join(re.escape(w) for w in words)
    return [(m.start(), m.end()) for m in re.finditer(pattern, text, re.IGNORECASE)]


def spans(text: str, entities: Sequence[Entity], gold: Sequence[Entity] | None = None) -> list[Span]:
    """Non-overlapping spans to highlight: every occurrence of each kept mention (a true or false
    positive against ``gold``), then each missed gold mention at its own offsets; longer spans win
    where two overlap."""
    gold_texts = {e.text for e in gold} if gold is not None else None
    predicted = {e.text for e in entities}
    candidates = []
    for e in entities:
        kind = "kept" if gold_texts is None else ("tp" if e.text in gold_texts else "fp")
        candidates += [Span(s, t, e.type, kind) for s, t in _occurrences(e.text, text)]
    for g in gold or ():
        if g.text not in predicted and g.start is not None and g.end is not None:
            candidates.append(Span(g.start, g.end, g.type, "fn"))
    chosen: list[Span] = []
    for span in sorted(candidates, key=lambda s: (-(s.end - s.start), s.start)):
        if all(span.end <= c.start or span.start >= c.end for c in chosen):
            chosen.append(span)
    return sorted(chosen, key=lambda s: s.start)


def _mark(text: str, found: Sequence[Span]) -> str:
    out, at = [], 0
    for span in found:
        out.append(html.escape(text[at:span.start]))
        label = {"fn": "missed", "fp": "false positive", "tp": "true positive"}.get(span.kind, "kept")
        out.append(f'<mark class="bx-e bx-{span.kind}" style="background:{type_colour(span.type)}" '
                   f'title="{html.escape(span.type)}: {label}">{html.escape(text[span.start:span.end])}'
                   f"<sub>{html.escape(span.type)}</sub></mark>")
        at = span.end
    out.append(html.escape(text[at:]))
    return "".join(out)


def document_score(doc_id: str, entities: Sequence[Entity], gold: Sequence[Entity]) -> PRF:
    """Strict P/R/F1 of one document, every gold type scored as it is."""
    types = {e.type for e in gold} | {e.type for e in entities}
    return score({doc_id: gold}, {doc_id: entities}, types, gold_map=None)


def render_document(doc_id: str, text: str, entities: Sequence[Entity], gold: Sequence[Entity] | None = None,
                    dropped: Sequence[Dropped] = (), label: str | None = None, style: bool = True) -> str:
    """One document as HTML (see the module docstring)."""
    meta = f"{len(entities)} entities"
    if gold is not None:
        prf = document_score(doc_id, entities, gold)
        meta += f" · P {prf.precision:.2f} R {prf.recall:.2f} F1 {prf.f1:.2f} (TP {prf.tp}, FP {prf.fp}, FN {prf.fn})"
    head = f'<div class="bx-head">{html.escape(label or doc_id)}<span class="bx-meta">{html.escape(meta)}</span></div>'
    body = _mark(text, spans(text, entities, gold))
    notes = [f"{html.escape(d.text)} [{html.escape(d.type)}] " + (f"leak: it is in {html.escape(d.found_in)}"
                                                                  if d.found_in else "ungrounded: in no document")
             for d in dropped]
    drop = f'<div class="bx-drop">not kept: {"; ".join(notes)}</div>' if notes else ""
    return (STYLE if style else "") + f'<div class="bx-doc">{head}<div>{body}</div>{drop}</div>'


def render_comparison(doc_id: str, text: str, alone: Sequence[Entity], batched: Sequence[Entity],
                      gold: Sequence[Entity] | None = None, per_call: int | None = None) -> str:
    """A document's answer alone (one document per call) and in its batch, side by side, with their
    agreement (strict F1 of the batched answer against the one alone)."""
    types = {e.type for e in alone} | {e.type for e in batched}
    agree = score({doc_id: alone}, {doc_id: batched}, types, gold_map=None)
    agreement = agree.f1 if alone or batched else 1.0
    left = render_document(doc_id, text, alone, gold, label="alone (1 per call)", style=False)
    label = f"in its batch ({per_call or 'N'} per call)"
    right = render_document(doc_id, text, batched, gold, label=label, style=False)
    return (STYLE + f'<div class="bx-head">{html.escape(doc_id)}<span class="bx-meta">agreement F1 {agreement:.2f}'
            f'</span></div><div class="bx-pair"><div>{left}</div><div>{right}</div></div>')


def legend(types: Sequence[str]) -> str:
    """The colour of each type, and the styles of true positives, false positives and misses."""
    cells = "".join(f'<span><mark class="bx-e" style="background:{type_colour(t)}">{html.escape(t)}</mark></span>'
                    for t in types)
    kinds = ('<span><mark class="bx-e bx-tp" style="background:#eee">true positive</mark></span>'
             '<span><mark class="bx-e bx-fp" style="background:#eee">false positive</mark></span>'
             '<span><mark class="bx-e bx-fn">missed gold</mark></span>')
    return STYLE + f'<div class="bx-legend">{cells}{kinds}</div>'


ORDERS = ("worst F1 first", "leaks", "zero entities", "corpus order")


def order(ids: Sequence[str], predictions: Mapping[str, Sequence[Entity]], how: str,
          gold: Mapping[str, Sequence[Entity]] | None = None,
          dropped: Mapping[str, Sequence[Dropped]] | None = None) -> list[str]:
    """The documents to step through for ``how`` (one of :data:`ORDERS`): worst strict F1 first
    (gold needed), only those with leaks (most first), only those with no entity, or as given."""
    if how == "worst F1 first":
        if gold is None:
            raise ValueError("ordering by F1 needs gold annotations")
        return sorted(ids, key=lambda i: (document_score(i, predictions.get(i, ()), gold.get(i, ())).f1, ids.index(i)))
    if how == "leaks":
        leaks = {i: sum(d.why == "leak" for d in (dropped or {}).get(i, ())) for i in ids}
        return sorted((i for i in ids if leaks[i]), key=lambda i: -leaks[i])
    if how == "zero entities":
        return [i for i in ids if not predictions.get(i)]
    if how == "corpus order":
        return list(ids)
    raise ValueError(f"unknown order {how!r}; orders: {', '.join(ORDERS)}")


class EntityViewer:
    """Steps through documents in a notebook: an order or filter (:data:`ORDERS`), previous and
    next, and the current document rendered; with ``alone`` (the one-document-per-call answers),
    each document's answer alone and in its batch side by side. ``texts``: id -> text."""

    def __init__(self, texts: Mapping[str, str], predictions: Mapping[str, Sequence[Entity]],
                 gold: Mapping[str, Sequence[Entity]] | None = None,
                 dropped: Mapping[str, Sequence[Dropped]] | None = None,
                 alone: Mapping[str, Sequence[Entity]] | None = None, per_call: int | None = None) -> None:
        self.texts, self.predictions, self.gold, self.dropped = texts, predictions, gold, dropped or {}
        self.alone, self.per_call = alone, per_call
        self.ids = list(texts)

    @classmethod
    def from_run(cls, result: RunResult, gold: GoldSample, alone: RunResult | None = None,
                 per_call: int | None = None) -> EntityViewer:
        """The documents of ``gold`` (:meth:`GoldSample.read`) as the run ``result`` extracted them,
        against their gold when they have it, with what validation dropped; with ``alone`` (a run
        of the same documents one per call) each answer alone and in its batch (``per_call``
        documents, default the run's mean)."""
        summary = result.summary
        if per_call is None and summary.batches:
            per_call = round(summary.documents / summary.batches)
        return cls(gold.texts, by_document(result.store.entities(result.run_id)), gold.gold,
                   by_document(result.store.dropped(result.run_id)),
                   alone=by_document(alone.store.entities(alone.run_id)) if alone is not None else None,
                   per_call=per_call)

    def ordered(self, how: str | None = None) -> list[str]:
        """The documents in the order ``how`` (:data:`ORDERS`; default: worst F1 first when there is
        gold, else corpus order)."""
        return order(self.ids, self.predictions, how or ("worst F1 first" if self.gold is not None else "corpus order"),
                     self.gold, self.dropped)

    def scores(self) -> pl.DataFrame:
        """One row per document: its entities, what validation dropped and its strict F1 against gold
        (None without gold), lowest F1 first."""
        import polars as pl

        rows = [{"doc_id": i, "entities": len(self.predictions.get(i, [])), "dropped": len(self.dropped.get(i, [])),
                 "f1": document_score(i, self.predictions.get(i, []), self.gold.get(i, [])).f1
                 if self.gold is not None else None} for i in self.ids]
        return pl.DataFrame(rows, schema={"doc_id": pl.Utf8, "entities": pl.Int64, "dropped": pl.Int64,
                                          "f1": pl.Float64}).sort("f1", nulls_last=True)

    def html(self, doc_id: str) -> str:
        gold = self.gold.get(doc_id, []) if self.gold is not None else None
        found = self.predictions.get(doc_id, [])
        if self.alone is not None:
            return render_comparison(doc_id, self.texts[doc_id], self.alone.get(doc_id, []), found, gold, self.per_call)
        return render_document(doc_id, self.texts[doc_id], found, gold, self.dropped.get(doc_id, ()))

    def show(self, how: str | None = None) -> ipywidgets.VBox:
        import ipywidgets as widgets

        orders = [o for o in ORDERS if self.gold is not None or o != "worst F1 first"]
        choose = widgets.Dropdown(options=orders, value=how or orders[0], description="show")
        back, forward = widgets.Button(description="previous"), widgets.Button(description="next")
        where, page = widgets.Label(), widgets.HTML()
        ids: list[str] = []
        at = 0

        def draw(*_: object) -> None:
            nonlocal at
            if not ids:
                where.value, page.value = "no document", ""
                return
            at %= len(ids)
            where.value = f"{at + 1} of {len(ids)}"
            page.value = self.html(ids[at])

        def reorder(*_: object) -> None:
            nonlocal ids, at
            ids, at = order(self.ids, self.predictions, choose.value, self.gold, self.dropped), 0
            draw()

        def step(delta: int) -> None:
            nonlocal at
            at += delta
            draw()

        choose.observe(reorder, names="value")
        back.on_click(lambda _: step(-1))
        forward.on_click(lambda _: step(1))
        reorder()
        return widgets.VBox([widgets.HBox([choose, back, forward, where]), page])


def by_document(items: Iterable[_Item]) -> dict[str, list[_Item]]:
    """Entities (or dropped mentions) grouped by the document they are from."""
    out: defaultdict[str, list[_Item]] = defaultdict(list)
    for item in items:
        out[item.source_document_id].append(item)
    return dict(out)
