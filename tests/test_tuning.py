"""The budget tuner: views of a setting in well under a second, measured points, the widget app."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from toolkit.corpora import synthetic_documents
from toolkit.notebook._tuning import Setting, Tuner, TunerModel


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("tune") / "c.jsonl"
    path.write_text("".join(json.dumps({"id": d.id, "text": d.text}) + "\n" for d in synthetic_documents(1000, seed=3)))
    return str(path)


def test_every_view_of_a_setting_is_computed_in_well_under_a_second_on_1000_documents(corpus: str) -> None:
    tuner = Tuner(corpus, lm="emulated:hosted-api")
    tuner.views(Setting())  # the chart renderer's first start
    for s in (Setting(budget=4096, max_docs=4), Setting(budget=16384, max_docs=16, strategy="ffd", concurrency=8)):
        start = time.perf_counter()
        views = tuner.views(s)
        assert time.perf_counter() - start < 1.0
        assert views["packing"]["documents"] == 1000 and views["curve_png"].startswith(b"\x89PNG")
    small, large = (tuner.views(Setting(max_docs=m))["prediction"] for m in (2, 16))
    assert small["speedup"] < large["speedup"] and small["docs_per_call"] == 2


def test_the_curve_marks_the_current_setting_and_predicts_one_per_call_as_1x(corpus: str) -> None:
    model = TunerModel(corpus, lm="emulated:hosted-api", sample=200)
    curve = model.curve(Setting(max_docs=6))
    assert curve.filter(curve["current"])["max_docs"].to_list() == [6]
    assert curve.filter(curve["max_docs"] == 1)["speedup"].item() == pytest.approx(1.0)


def test_a_measured_point_lands_next_to_the_prediction_and_is_saved(ncbi_devel: Path, tmp_path: Path) -> None:
    model = TunerModel(str(ncbi_devel), lm="emulated:hosted-api", sample=40)
    point = model.measure(Setting(max_docs=8), n=16)
    assert point["measured_speedup"] > 1.0 and point["predicted_speedup"] > 1.0
    assert point["f1"] is None and point["reference_f1"] is None  # an emulated LM's entities are no quality
    assert model.measured_frame().height == 1
    saved = json.loads(model.save(tmp_path).read_text())
    assert saved["kind"] == "tune" and saved["configs"][0]["max_docs"] == 8


def test_a_stopped_measurement_keeps_no_point_and_leaves_its_runs_resumable(corpus: str) -> None:
    import threading

    model = TunerModel(corpus, lm="emulated:hosted-api", sample=100)
    stop = threading.Event()
    stop.set()
    with pytest.raises(RuntimeError, match="stop requested"):
        model.measure(Setting(), n=20, stop=stop)
    assert model.measured == []


def test_the_widget_app_updates_its_views_and_measures_in_the_background(corpus: str) -> None:
    tuner = Tuner(corpus, lm="emulated:hosted-api", sample=300, measure_docs=10)
    tuner.show()
    w = tuner.widgets
    before = w["prediction"].value
    w["max_docs"].value = 2
    assert w["prediction"].value != before and "docs_per_call" in w["prediction"].value
    packing = w["packing"].value
    w["budget"].value = 2048
    assert w["packing"].value != packing
    w["measure"].click()
    deadline = time.monotonic() + 60
    while tuner.model.measured == [] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert tuner.model.measured and tuner.model.measured[0]["max_docs"] == 2
    while "measured speedup" not in w["status"].value and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "measured speedup" in w["status"].value
