"""Altair chart builders: each takes a tidy polars frame and returns a chart.

Offline rendering: call :func:`use_offline_renderer` once (PNG through vl-convert, no CDN), or
save charts with ``chart.save("x.png")``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import altair as alt

if TYPE_CHECKING:
    import polars as pl


def use_offline_renderer() -> None:
    """Render charts as PNG in notebooks: Altair's default HTML renderer needs a CDN."""
    alt.renderers.enable("png")


def batch_fill_chart(frame: pl.DataFrame, budget: int | None = None) -> alt.Chart:
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


def docs_per_batch_chart(frame: pl.DataFrame) -> alt.Chart:
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


def eval_chart(frame: pl.DataFrame) -> alt.Chart:
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


def bench_chart(frame: pl.DataFrame) -> alt.Chart:
    """Documents per second of each benchmark configuration (frame: ``bench`` configs)."""
    return alt.Chart(frame).mark_bar().encode(
        x=alt.X("config:N", sort=None, title="configuration"),
        y=alt.Y("docs_per_second:Q", title="documents per second (measured)"),
        tooltip=["config", "seconds", "calls", "docs_per_second"],
    ).properties(width=360, height=260, title="Throughput side by side")


def png(chart: alt.TopLevelMixin, scale: float = 1.0) -> bytes:
    """A chart as PNG bytes (vl-convert: offline), e.g. for an ipywidgets Image."""
    import vl_convert

    return vl_convert.vegalite_to_png(chart.to_json(), scale=scale)


def speedup_curve_chart(curve: pl.DataFrame, measured: pl.DataFrame | None = None) -> alt.LayerChart | alt.FacetChart:
    """Predicted speedup against documents per call, the current setting marked, and measured
    points (frames: ``TunerModel.curve`` and ``TunerModel.measured_frame``)."""
    x = alt.X("max_docs:Q", title="documents per call", scale=alt.Scale(domain=[1, 16]))
    line = alt.Chart(curve).mark_line(point=True, color="#4c78a8").encode(
        x=x, y=alt.Y("speedup:Q", title="speedup vs one document per call"), tooltip=["max_docs", "speedup", "f1"])
    # a ring, so a measured point where it was predicted shows inside it
    current = alt.Chart(curve).transform_filter("datum.current").mark_point(
        size=260, color="#e45756", filled=False, strokeWidth=3, opacity=1).encode(x=x, y="speedup:Q")
    layers = [line, current]
    if measured is not None and measured.height:
        at = "docs_per_call" if "docs_per_call" in measured.columns else "max_docs"  # as packed: N docs cap it
        layers.append(alt.Chart(measured).mark_point(shape="diamond", size=160, color="#54a24b", filled=True,
                                                  opacity=1).encode(
            x=alt.X(f"{at}:Q"), y="measured_speedup:Q",
            tooltip=["max_docs", "budget", "measured_speedup", "predicted_speedup"]))
    return alt.layer(*layers).properties(width=420, height=240,
                                         title="Predicted speedup (line), this setting (red), measured (green)")


def chaos_timeline_chart(attempts: pl.DataFrame,
                         concurrency_history: Sequence[tuple[float, int]]) -> alt.VConcatChart:
    """A run over (virtual) time: calls in flight at each call's start with the concurrency limit,
    and each call's wait before it started, coloured by how it ended (frame: ``RunMetrics.to_polars``;
    ``concurrency_history``: the report's ``(time, limit)`` changes)."""
    import polars as pl

    calls = attempts.with_columns(
        pl.when(pl.col("outcome") == "ok").then(pl.lit("ok"))
        .otherwise(pl.col("error_class").fill_null("error")).alias("ended"),
        pl.when(pl.col("splits") > 0).then(pl.lit("split")).when(pl.col("retries") > 0).then(pl.lit("retried"))
        .otherwise(pl.lit("")).alias("then"))
    last = calls["started"].max()  # a float column's: None without calls
    end = (float(last) if isinstance(last, (int, float)) else 0.0) + 1.0
    limit = pl.DataFrame([{"t": t, "limit": v} for t, v in concurrency_history] + [
        {"t": end, "limit": concurrency_history[-1][1] if concurrency_history else 0}])
    x = alt.X("started:Q", title="virtual seconds")
    flight = alt.Chart(calls).mark_circle(size=12, opacity=0.5).encode(
        x=x, y=alt.Y("in_flight:Q", title="calls in flight / limit"), color=alt.Color("ended:N", title="call ended"))
    line = alt.Chart(limit).mark_line(interpolate="step-after", color="black").encode(x="t:Q", y="limit:Q")
    waits = alt.Chart(calls).mark_circle(size=12, opacity=0.6).encode(
        x=x, y=alt.Y("delay_before:Q", title="wait before the call (s)"), color=alt.Color("ended:N"),
        tooltip=["batch_id", "attempt", "ended", "then", "delay_before", "rate_wait"])
    return alt.vconcat((flight + line).properties(width=560, height=170, title="Calls in flight and the limit"),
                       waits.properties(width=560, height=170, title="Backoff, Retry-After and queueing"))


def quality_curves_chart(frame: pl.DataFrame) -> alt.HConcatChart:
    """Against documents per call: measured speedup, strict and lenient F1, and entities per
    document (frame: ``eval`` configs)."""
    import polars as pl

    x = alt.X("max_docs:Q", title="documents per call")
    speed = alt.Chart(frame).mark_line(point=True).encode(x=x, y=alt.Y("speedup:Q", title="speedup (measured)"))
    f1 = frame.unpivot(index="max_docs", on=["strict_f1", "lenient_f1"], variable_name="measure", value_name="f1")
    quality = alt.Chart(f1).mark_line(point=True).encode(
        x=x, y=alt.Y("f1:Q", title="F1", scale=alt.Scale(domain=[0, 1])), color=alt.Color("measure:N", title=None))
    per_doc = alt.Chart(frame.with_columns(pl.col("entities_per_doc"))).mark_line(point=True, color="#72b7b2").encode(
        x=x, y=alt.Y("entities_per_doc:Q", title="entities per document"))
    return alt.hconcat(*(c.properties(width=200, height=170) for c in (speed, quality, per_doc)))


def position_chart(frame: pl.DataFrame) -> alt.Chart:
    """Strict F1 of the documents at each position in their batch, per configuration (frame:
    ``eval``'s ``by_position``): a model that loses track of later documents shows it here."""
    return alt.Chart(frame).mark_line(point=True).encode(
        x=alt.X("position:O", title="position in the batch (0 = first)"),
        y=alt.Y("f1:Q", title="strict F1", scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("config:N", title=None),
    ).properties(width=420, height=220, title="F1 by position in the batch")


def runs_chart(frame: pl.DataFrame) -> alt.HConcatChart:
    """Several eval runs together: measured speedup and strict F1 against documents per call, a
    line per run (frame: their configs with a ``run`` column)."""
    x = alt.X("max_docs:Q", title="documents per call")
    color = alt.Color("run:N", title=None)
    speed = alt.Chart(frame).mark_line(point=True).encode(x=x, y=alt.Y("speedup:Q", title="speedup (measured)"),
                                                          color=color)
    f1 = alt.Chart(frame).mark_line(point=True).encode(x=x, y=alt.Y("strict_f1:Q", title="strict F1"), color=color)
    return alt.hconcat(speed.properties(width=260, height=200), f1.properties(width=260, height=200))


def quality_frontier_chart(frame: pl.DataFrame,
                           x_axis: str | None = None) -> alt.LayerChart | alt.FacetChart | alt.HConcatChart:
    """Measured strict F1 (a 95% interval as a bar) against measured documents per minute
    (``x_axis="docs_per_min"``) or cost per 1,000 documents (``"cost_per_1k_docs"``), one point per
    setting (frame: :func:`toolkit.notebook.quality_frontier`), the settings no other beats on both
    joined by a line; the tooltip holds the command that measures a point again. By default speed,
    and cost beside it where any setting is priced."""
    import polars as pl

    if x_axis is None:
        speed = quality_frontier_chart(frame, "docs_per_min")
        priced = frame["cost_per_1k_docs"].drop_nulls().len() > 0
        return alt.hconcat(speed, quality_frontier_chart(frame, "cost_per_1k_docs")) if priced else speed

    cost = x_axis == "cost_per_1k_docs"
    frame = frame.filter(pl.col("strict_f1").is_not_null() & pl.col(x_axis).is_not_null())
    best = frame.sort(x_axis, descending=not cost).filter(
        pl.col("strict_f1") >= pl.col("strict_f1").cum_max()).sort(x_axis)
    x = alt.X(f"{x_axis}:Q", title="USD per 1,000 documents" if cost else "documents per minute (measured)",
              scale=alt.Scale(zero=False))
    y = alt.Y("strict_f1:Q", title="strict F1 (95% interval)", scale=alt.Scale(zero=False))
    tooltip = ["run", "setting", "strict_f1", "f1_lo", "f1_hi", "strict_precision", "strict_recall",
               "docs_per_min", "cost_per_1k_docs", "command"]
    bars = alt.Chart(frame).mark_rule(opacity=0.5).encode(x=x, y="f1_lo:Q", y2="f1_hi:Q", color="run:N")
    points = alt.Chart(frame).mark_point(filled=True, size=70).encode(
        x=x, y=y, color=alt.Color("run:N", title=None), tooltip=tooltip)
    line = alt.Chart(best).mark_line(color="#555", strokeDash=[4, 3]).encode(x=x, y=y)
    return alt.layer(bars, line, points).properties(
        width=460, height=280, title=f"Quality against {'cost' if cost else 'speed'}, measured: the settings no "
                                     "other beats on both (dashed)")
