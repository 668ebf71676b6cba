"""Altair chart builders: each takes a tidy polars frame and returns a chart.

Offline rendering: call :func:`use_offline_renderer` once (PNG through vl-convert, no CDN), or
save charts with ``chart.save("x.png")``.
"""

from __future__ import annotations

import altair as alt


def use_offline_renderer() -> None:
    """Render charts as PNG in notebooks: Altair's default HTML renderer needs a CDN."""
    alt.renderers.enable("png")


def batch_fill_chart(frame, budget: int | None = None) -> alt.Chart:
    """Budget fill of every batch, one panel per strategy (frame from ``PackResult.to_polars``)."""
    title = "Budget used per batch" + (f" (budget {budget:,} tokens)" if budget else "")
    return (
        alt.Chart(frame)
        .mark_bar()
        .encode(
            x=alt.X("fill:Q", bin=alt.Bin(maxbins=20), title="share of the token budget used"),
            y=alt.Y("count():Q", title="batches"),
            color=alt.Color("strategy:N", legend=None),
            column=alt.Column("strategy:N", title=None),
        )
        .properties(width=260, height=180, title=title)
    )


def docs_per_batch_chart(frame) -> alt.Chart:
    """How many documents each strategy puts in a batch."""
    return (
        alt.Chart(frame)
        .mark_bar()
        .encode(
            x=alt.X("docs:O", title="documents in batch"),
            y=alt.Y("count():Q", title="batches"),
            color="strategy:N",
            xOffset="strategy:N",
        )
        .properties(width=360, height=180, title="Documents per batch")
    )


def eval_chart(frame) -> alt.Chart:
    """Strict F1 against speedup, one point per configuration labelled with its documents per call
    (frame: ``eval`` configs)."""
    base = alt.Chart(frame).encode(
        x=alt.X("speedup:Q", title="speedup vs one document per call (measured)"),
        y=alt.Y("strict_f1:Q", title="strict F1", scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("budget:N", title="token budget"),
        tooltip=["config", "speedup", "strict_f1", "lenient_f1", "leaks"],
    )
    label = base.mark_text(dx=8, dy=-8, align="left").encode(text=alt.Text("max_docs:Q", format="d"))
    return (base.mark_point(size=80, filled=True) + label).properties(
        width=480, height=300, title="Quality and speed of each configuration")


def bench_chart(frame) -> alt.Chart:
    """Documents per second of each benchmark configuration (frame: ``bench`` configs)."""
    return alt.Chart(frame).mark_bar().encode(
        x=alt.X("config:N", sort=None, title="configuration"),
        y=alt.Y("docs_per_second:Q", title="documents per second (measured)"),
        tooltip=["config", "seconds", "calls", "docs_per_second"],
    ).properties(width=360, height=260, title="Throughput side by side")
