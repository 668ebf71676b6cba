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
