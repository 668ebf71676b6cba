"""The budget tuner: pick a setting, see what it would do to this corpus, measure it, see the point
land next to the prediction.

:class:`TunerModel` is the logic (tested like the rest): the corpus's documents and token counts
are read once, so every view of a setting is computed in milliseconds: the packing of this corpus,
the planner's prediction (documents per minute, speedup against one document per call, what
bounds it, predicted F1 from an eval curve) and the curve of predicted speedup against documents
per call. :meth:`TunerModel.measure` runs a setting for real on N documents side by side with one
document per call (through :func:`toolkit.run`, into a store: an emulated LM in virtual time, a
real one in real time) and keeps the measured point. :class:`Tuner` is the widget app over it.
"""

from __future__ import annotations

import html
import json
import statistics
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from toolkit.core import Document, Layout, Strategy
from toolkit.extraction import ExtractionSettings
from toolkit.jobs import Progress, measure_reserves
from toolkit.measure import EvalResult
from toolkit.notebook._viewer import by_document
from toolkit.packing import Packer, PackingSettings, PackResult, get_counter
from toolkit.plan import DEFAULT_OUTPUT_PER_DOC, predict, profile_capabilities, resolve_profile

if TYPE_CHECKING:
    import ipywidgets
    import polars as pl

    from toolkit.jobs import RunSummary

CURVE_DOCS = tuple(range(1, 17))
REPLY_FRAME = '{"results": []}'  # what the extraction module's reply writes once per call, whatever its documents


@dataclass(frozen=True)
class Setting:
    """What the tuner varies."""

    budget: int = 8192
    max_docs: int = 8
    strategy: Strategy = "fifo"
    layout: Layout = "auto"
    concurrency: int = 1

    def label(self) -> str:
        return f"budget={self.budget},max_docs={self.max_docs},{self.strategy},{self.layout},c={self.concurrency}"


def default_profile(lm: str) -> str:
    """The latency profile a prediction for ``lm`` starts from: the emulated profile itself, the
    shipped local-cpu profile for the local model, else hosted-api."""
    if lm.startswith("emulated:"):
        return lm.partition(":")[2] or "hosted-api"
    return "local-cpu" if lm == "local" or lm.startswith("local:") else "hosted-api"


class TunerModel:
    """The tuner's state: a corpus sample, a latency profile, an optional eval curve, the measured
    points. ``corpus``: a name or file; ``sample``: documents read (the first ones)."""

    def __init__(self, corpus: str, lm: str = "emulated:hosted-api", profile: str | None = None,
                 eval_results: EvalResult | str | Path | None = None, sample: int = 1000,
                 types: tuple[str, ...] = ("DISEASE",)) -> None:
        from toolkit.corpora import dedupe, iter_records

        self.corpus, self.lm = str(corpus), lm
        self.profile = resolve_profile(profile or default_profile(lm))
        self.tokenizer = profile_capabilities(self.profile).tokenizer
        records = [r for _, r in zip(range(sample), iter_records(self.corpus)) if isinstance(r, Document)]
        self.documents, _ = dedupe(records)
        if not self.documents:
            raise ValueError(f"{corpus}: no documents")
        counter = get_counter(self.tokenizer)
        self.token_counts = [counter.count(d.text) for d in self.documents]
        self.evaluation = None if not eval_results else eval_results if isinstance(eval_results, EvalResult) \
            else EvalResult.from_json(eval_results)
        self.settings = (self.evaluation and self.evaluation.extraction_settings()) \
            or ExtractionSettings(entity_types=types, relationships=False)
        self.prompt_tokens, self.per_doc_tokens = measure_reserves(self.settings, self.tokenizer)
        rows = self.evaluation.configs if self.evaluation else ()
        self.quality = {r.max_docs: r.strict_f1 for r in rows}
        extracted = sum(r.extracted for r in rows)
        self.output_per_doc = sum(r.counts.tokens_out for r in rows) / extracted if extracted \
            else DEFAULT_OUTPUT_PER_DOC
        self.reply_frame = 0.0  # output tokens a reply writes once per call (known once replies are measured)
        self.output_source = "eval run" if extracted else f"assumed {DEFAULT_OUTPUT_PER_DOC:g} (not measured yet)"
        self.measured: list[dict[str, Any]] = []

    # --------------------------------------------------------------------------------- views
    def packing(self, s: Setting) -> PackResult:
        settings = PackingSettings(token_budget=s.budget, max_docs=s.max_docs, strategy=s.strategy,
                                   prompt_tokens=self.prompt_tokens, doc_overhead_tokens=self.per_doc_tokens,
                                   output_tokens_per_doc=self.settings.output_tokens_per_doc, model=self.tokenizer)
        return Packer(settings).pack(self.documents, token_counts=self.token_counts)

    def _predict(self, s: Setting, max_docs: int | None = None, concurrency: int | None = None) -> dict[str, Any]:
        n = max_docs or s.max_docs
        # a measured one-document reply holds the reply's frame once: a call on n documents writes it once
        output = self.output_per_doc - self.reply_frame + self.reply_frame / n
        return predict(self.profile, statistics.fmean(self.token_counts), self.prompt_tokens, self.per_doc_tokens,
                       output, n, concurrency or s.concurrency, self.settings, s.budget)

    def prediction(self, s: Setting) -> dict[str, Any]:
        """The planner's prediction for ``s`` against one document per call (concurrency 1)."""
        row = self._predict(s)
        base = self._predict(s, max_docs=1, concurrency=1)
        return {**row, "speedup": row["docs_per_min"] / base["docs_per_min"],
                "f1": self.quality.get(s.max_docs), "f1_source": "eval run" if self.quality else None}

    def curve(self, s: Setting) -> pl.DataFrame:
        """Predicted speedup against documents per call at ``s``'s budget and concurrency."""
        import polars as pl

        base = self._predict(s, max_docs=1, concurrency=1)["docs_per_min"]
        rows = [{"max_docs": m, "speedup": self._predict(s, max_docs=m)["docs_per_min"] / base,
                 "f1": self.quality.get(m), "current": m == s.max_docs} for m in CURVE_DOCS]
        return pl.DataFrame(rows, schema={"max_docs": pl.Int64, "speedup": pl.Float64, "f1": pl.Float64,
                                          "current": pl.Boolean})

    # ----------------------------------------------------------------------------- measuring
    def measure(self, s: Setting, n: int = 24, store: str | None = None, progress: Progress = False,
                stop: threading.Event | None = None) -> dict[str, Any]:
        """``s`` run for real on the first ``n`` documents, side by side with one document per call
        (concurrency 1), into ``store`` (default: a temporary SQLite file). ``progress`` and ``stop``
        go to :func:`toolkit.run`: once ``stop`` is set the run stops, resumable under its name, and
        no point is kept (``RuntimeError``). The measured point is kept and returned."""
        import toolkit
        from toolkit.jobs import RunSettings

        if store is None:
            store = f"sqlite:///{tempfile.mkdtemp(prefix='batchx-tune-')}/tune.db"
        extraction = replace(self.settings, layout=s.layout)
        seconds, runs = {}, {}
        for name, setting in (("one per call", replace(s, max_docs=1, concurrency=1)), ("setting", s)):
            settings = RunSettings(token_budget=setting.budget, max_docs=setting.max_docs, strategy=setting.strategy,
                                   concurrency=str(setting.concurrency), extraction=extraction)
            result = toolkit.run(self.corpus, lm=self.lm, store=store, settings=settings, limit=n, stop=stop,
                                 run_name=f"tune-{len(self.measured)}-{name.replace(' ', '-')}", progress=progress)
            summary = result.summary
            if summary.stop_reason:
                raise RuntimeError(f"measurement stopped: {summary.stop_reason}")
            seconds[name] = summary.virtual_seconds or summary.wall_seconds
            runs[name] = result
        self._learn_output(runs["one per call"].summary)
        batches = runs["setting"].summary.batches
        point = {**asdict(s), "documents": n, "docs_per_call": n / batches if batches else None,
                 "measured_speedup": seconds["one per call"] / seconds["setting"],
                 "seconds": seconds["setting"], "reference_seconds": seconds["one per call"],
                 "predicted_speedup": self.prediction(s)["speedup"], "f1": self._f1(runs["setting"]),
                 "reference_f1": self._f1(runs["one per call"]), "store": store}
        self.measured.append(point)
        return point

    def _learn_output(self, reference: RunSummary) -> None:
        """The output tokens per document this LM really writes on this corpus, from a measurement's
        one-document replies: the prediction of the measured point and every view after it use them
        (an emulated reply of a synthetic abstract is ~100 tokens, not the assumed 60), less the
        reply's frame (:data:`REPLY_FRAME`), which a call on n documents writes once, not n times."""
        if reference.extracted and reference.counts.tokens_out:
            self.output_per_doc = reference.counts.tokens_out / reference.extracted
            self.reply_frame = min(self.output_per_doc, get_counter(self.tokenizer).count(REPLY_FRAME))
            self.output_source = f"measured replies ({reference.extracted} documents, one per call)"

    def _f1(self, result: Any) -> float | None:
        """Strict F1 of a run against the corpus's gold annotations (None without them, and for an
        emulated LM: its entities come from a deterministic stand-in, not a model)."""
        from toolkit.corpora import CorpusError, gold_mapping, iter_gold
        from toolkit.measure import score

        if self.lm.startswith("emulated:"):
            return None
        try:
            pairs = list(iter_gold(self.corpus))
        except CorpusError:
            return None
        ids = set(result.documents["doc_id"].to_list())
        gold = {d.id: g for d, g in pairs if d.id in ids}
        mapping, scored = gold_mapping(e.type for g in gold.values() for e in g)
        return score(gold, by_document(result.store.entities(result.run_id)), scored, gold_map=mapping).f1

    def measured_frame(self) -> pl.DataFrame:
        import polars as pl

        return pl.DataFrame(self.measured) if self.measured else pl.DataFrame(
            schema={"max_docs": pl.Int64, "measured_speedup": pl.Float64, "predicted_speedup": pl.Float64})

    def save(self, folder: str | Path) -> Path:
        """The measured points as ``results.json`` (kind ``tune``: like ``bench --out``, one
        configuration per measured setting)."""
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        path = out / "results.json"
        path.write_text(json.dumps({"kind": "tune", "lm": self.lm, "corpus": self.corpus,
                                    "profile": self.profile.to_dict(), "settings": self.settings.to_dict(),
                                    "configs": self.measured}, indent=2, default=str) + "\n")
        return path


class Tuner:
    """The widget app: controls for a :class:`Setting`, live views of the packing and the
    prediction, the speedup curve, and Measure / Stop / Save. ``Tuner(corpus, lm=...).show()``."""

    def __init__(self, corpus: str, lm: str = "emulated:hosted-api", profile: str | None = None,
                 eval_results: EvalResult | str | Path | None = None, sample: int = 1000,
                 measure_docs: int = 24) -> None:
        self.model = TunerModel(corpus, lm, profile, eval_results, sample)
        self.measure_docs = measure_docs
        self.stop = threading.Event()

    def views(self, s: Setting) -> dict[str, Any]:
        """Everything one setting shows: packing figures, prediction, and the two charts as PNG."""
        from toolkit.measure import batch_fill_chart, png, speedup_curve_chart

        pack = self.model.packing(s)
        report = pack.report()
        packing = {k: report[k] for k in ("documents", "batches", "oversize", "mean_docs_per_batch", "fill_ratio")}
        chart = batch_fill_chart(pack.to_polars(), s.budget).properties(width=300, height=150)
        curve = speedup_curve_chart(self.model.curve(s), self.model.measured_frame())
        return {"packing": packing, "prediction": self.model.prediction(s), "fill_png": png(chart),
                "curve_png": png(curve)}

    def show(self) -> ipywidgets.VBox:
        import ipywidgets as w

        controls = _controls(profile_capabilities(self.model.profile).layouts)
        packing, prediction, status = w.HTML(), w.HTML(), w.HTML()
        fill, curve = w.Image(format="png"), w.Image(format="png")
        bar = w.IntProgress(min=0, max=2 * self.measure_docs, description="measure")
        measure, stop, save = (w.Button(description=d) for d in ("Measure", "Stop", "Save"))

        def setting() -> Setting:
            return Setting(**{k: c.value for k, c in controls.items()})

        def refresh(*_: object) -> None:
            views = self.views(setting())
            packing.value = _table("packing of this corpus", views["packing"])
            prediction.value = _table(f"prediction ({self.model.profile.name})", {
                k: views["prediction"][k] for k in ("docs_per_min", "speedup", "bound_by", "docs_per_call", "f1")})
            fill.value, curve.value = views["fill_png"], views["curve_png"]

        def tick(tally: dict[str, Any]) -> None:
            bar.value = min(bar.max, bar.value + 1)

        def work() -> None:
            try:
                point = self.model.measure(setting(), self.measure_docs, progress=tick, stop=self.stop)
                status.value = (f"measured speedup <b>{point['measured_speedup']:.2f}x</b> (predicted "
                                f"{point['predicted_speedup']:.2f}x) on {point['documents']} documents")
            except RuntimeError as exc:
                status.value = f"{html.escape(str(exc))}: the runs stay resumable in the store"
            measure.disabled = False
            refresh()

        def run_measure(_: object) -> None:  # in a thread: the Stop button stays live meanwhile
            self.stop.clear()
            bar.value, measure.disabled, status.value = 0, True, "measuring..."
            threading.Thread(target=work, daemon=True).start()

        def stop_measure(_: object) -> None:
            self.stop.set()

        def save_points(_: object) -> None:
            status.value = f"saved {self.model.save('tune-results')}"

        for c in controls.values():
            c.observe(refresh, names="value")
        measure.on_click(run_measure)
        stop.on_click(stop_measure)
        save.on_click(save_points)
        refresh()
        self.widgets = {**controls, "packing": packing, "prediction": prediction, "measure": measure, "stop": stop,
                        "status": status, "curve": curve}
        return w.VBox([w.HBox([w.VBox(list(controls.values())), w.VBox([packing, prediction])]),
                       w.HBox([fill, curve]), w.HBox([measure, stop, save, bar]), status])


_WIDE = {"description_width": "initial"}  # labels in full


def _controls(layouts: Sequence[str]) -> dict[str, Any]:
    """The tuner's controls, one per field of :class:`Setting`, at its defaults."""
    import ipywidgets as w

    return {
        "budget": w.IntSlider(8192, min=1024, max=32768, step=512, description="token budget",
                              continuous_update=False, style=_WIDE),
        "max_docs": w.IntSlider(8, min=1, max=16, description="docs per call", continuous_update=False,
                                style=_WIDE),
        "strategy": w.ToggleButtons(options=["fifo", "ffd"], description="strategy", style=_WIDE),
        "layout": w.Dropdown(options=["auto", *layouts], description="layout", style=_WIDE),
        "concurrency": w.Dropdown(options=[1, 2, 4, 8, 16], value=1, description="concurrency", style=_WIDE),
    }


def _table(title: str, values: dict[str, Any]) -> str:
    def fmt(v: Any) -> str:
        return f"{v:,.3g}" if isinstance(v, float) else ("-" if v is None else str(v))

    rows = "".join(f"<tr><td>{html.escape(k)}</td><td><b>{html.escape(fmt(v))}</b></td></tr>"
                   for k, v in values.items())
    return f"<div><b>{html.escape(title)}</b><table>{rows}</table></div>"
