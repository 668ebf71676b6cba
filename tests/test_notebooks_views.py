"""What the notebooks show, as functions: a gold sample, the viewer from a run, the measured
frontier, the eval and bench frames, the committed real-model runs (emulated provider, seconds)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import toolkit
from toolkit.extraction import ExtractionSettings
from toolkit.jobs import RunSettings
from toolkit.notebook import (
    EntityViewer,
    GoldSample,
    bench_frame,
    bench_headline,
    committed_results,
    eval_frame,
    quality_frontier,
)

ABSTRACTS = [
    ("1", "Cystic fibrosis in children.", "Cystic fibrosis is a genetic disease; asthma is common too.",
     [("Cystic fibrosis", "SpecificDisease"), ("Cystic fibrosis", "SpecificDisease")]),
    ("2", "Breast cancer genes.", "BRCA1 mutations cause breast cancer and ovarian cancer.",
     [("breast cancer", "SpecificDisease"), ("ovarian cancer", "SpecificDisease")]),
    ("3", "Diabetes.", "Type 2 diabetes and obesity are linked to heart disease.",
     [("Type 2 diabetes", "SpecificDisease"), ("heart disease", "DiseaseClass")]),
]


@pytest.fixture(scope="module")
def gold_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    lines = []
    for pmid, title, abstract, mentions in ABSTRACTS:
        text, at = f"{title} {abstract}", 0
        lines += [f"{pmid}|t|{title}", f"{pmid}|a|{abstract}"]
        for mention, kind in mentions:
            at = text.index(mention, at)
            lines.append(f"{pmid}\t{at}\t{at + len(mention)}\t{mention}\t{kind}\tD0")
            at += len(mention)
        lines.append("")
    path = tmp_path_factory.mktemp("gold") / "devel.pubtator"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def test_a_gold_sample_maps_gold_types_onto_the_toolkits_and_falls_back_to_documents(gold_file: str) -> None:
    sample = GoldSample.read(gold_file, 2)
    assert list(sample.texts) == ["1", "2"] and sample.types == ("DISEASE",)
    assert sample.gold is not None and {e.type for g in sample.gold.values() for e in g} == {"DISEASE"}
    assert [e.text for e in sample.gold["2"]] == ["breast cancer", "ovarian cancer"]
    plain = GoldSample.read("sample", 3, types=("GENE",))
    assert len(plain.texts) == 3 and plain.gold is None and plain.types == ("GENE",)


def _run(corpus: str, per_call: int, types: tuple[str, ...]) -> toolkit.RunResult:
    settings = RunSettings(max_docs=per_call, concurrency="1",
                           extraction=ExtractionSettings(entity_types=types, relationships=False))
    return toolkit.run(corpus, lm="emulated:hosted-api", settings=settings, store="sqlite://:memory:",
                       run_name=f"v{per_call}", progress=False)


def test_the_viewer_from_a_run_groups_entities_by_document_against_gold(gold_file: str) -> None:
    sample = GoldSample.read(gold_file, 3)
    alone, batched = _run(gold_file, 1, sample.types), _run(gold_file, 3, sample.types)
    viewer = EntityViewer.from_run(batched, sample, alone=alone)
    assert viewer.ids == ["1", "2", "3"] and viewer.per_call == 3 and viewer.alone is not None
    stored = batched.store.entities(batched.run_id)
    assert sum(len(v) for v in viewer.predictions.values()) == len(stored)
    assert all(e.source_document_id == doc for doc, found in viewer.predictions.items() for e in found)
    scores = viewer.scores()
    assert scores.columns == ["doc_id", "entities", "dropped", "f1"] and scores.height == 3
    assert scores["f1"].to_list() == sorted(scores["f1"].to_list())  # worst first
    assert viewer.ordered()[0] == scores["doc_id"][0]
    assert "in its batch (3 per call)" in viewer.html("2")
    without_gold = EntityViewer.from_run(batched, GoldSample(sample.texts, None, sample.types))
    assert without_gold.ordered() == ["1", "2", "3"] and without_gold.scores()["f1"].null_count() == 3
    assert "in its batch" not in without_gold.html("2")


def test_the_quality_frontier_is_every_real_model_setting_measured_with_its_command(tmp_path: Path,
                                                                                   gold_file: str) -> None:
    """One point per configuration of each real-model eval (emulated evals left out), F1 with its
    interval, documents per minute from the run's seconds, and a command naming that setting."""
    from toolkit.measure import evaluate, png, quality_frontier_chart, write_results

    emulated = evaluate(gold_file, lm="emulated:hosted-api", limit=3, max_docs=(1, 3), resamples=50,
                        reference_cache=False)
    write_results(emulated, tmp_path / "emulated")
    data = emulated.to_json()
    data.update(lm="local", emulated=False, settings={**data["settings"], "demos": "ncbi-disease-train", "shots": 4})
    data["configs"][1]["seconds"] = 30.0
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "results.json").write_text(json.dumps(data))
    frame = quality_frontier(tmp_path)
    assert frame["run"].to_list() == ["real", "real"] and frame["max_docs"].to_list() == [1, 3]
    assert frame["docs_per_min"][1] == pytest.approx(6.0)  # 3 documents in 30 s
    lo, f1, hi = frame["f1_lo"][0], frame["strict_f1"][0], frame["f1_hi"][0]
    assert lo is not None and hi is not None and lo <= f1 <= hi
    assert frame["setting"][1] == "3 per call, packed, 4 shots of ncbi-disease-train"
    assert frame["command"][1].endswith("--lm local --limit 3 --max-docs 3 --layout packed "
                                        "--demos ncbi-disease-train --shots 4")
    assert png(quality_frontier_chart(frame))[:4] == b"\x89PNG"
    data["settings"].update(demo_choice="coverage", passes=2)
    (tmp_path / "real" / "results.json").write_text(json.dumps(data))
    again = quality_frontier(tmp_path)  # a setting with passes and coverage demos names them, and so does its command
    assert again["setting"][1] == "3 per call, packed, 4 coverage shots of ncbi-disease-train, 2 passes"
    assert again["command"][1].endswith("--shots 4 --demo-choice coverage --passes 2")
    costed = quality_frontier(tmp_path, price="openai/gpt-4o-mini")  # what the tokens would cost there
    assert costed["cost_per_1k_docs"].to_list() == pytest.approx(frame["cost_per_1k_docs"].to_list())  # as run
    dearer = quality_frontier(tmp_path, price="openai/gpt-4o")["cost_per_1k_docs"]
    assert all(d > c > 0 for d, c in zip(dearer, costed["cost_per_1k_docs"]))
    assert png(quality_frontier_chart(costed, x_axis="cost_per_1k_docs"))[:4] == b"\x89PNG"
    assert quality_frontier(tmp_path / "emulated").height == 0
    committed = quality_frontier()
    assert committed.height > 0 and "eval-local-ncbi-devel100" in committed["run"].to_list()


def test_the_eval_and_bench_frames_and_the_headline(gold_file: str) -> None:
    from toolkit.measure import bench, evaluate

    assert eval_frame(None) is None
    quality = evaluate(gold_file, lm="emulated:hosted-api", limit=3, max_docs=(1, 3), resamples=50,
                       reference_cache=False)
    frame = eval_frame(quality)
    assert frame is not None and frame.height == 2 and {"strict_precision", "strict_recall", "strict_f1"} <= set(
        frame.columns)
    speed = bench("emulated:hosted-api@100", "synthetic", 40)
    table = bench_frame(speed)
    assert table["config"][0] == "A" and table["lost"].sum() == 0
    headline = bench_headline(speed)
    assert headline["lost"] == 0 and headline["speedup_c_vs_a"] and headline["speedup_c_vs_a"] > 1


def test_committed_results_read_the_repositorys_real_model_runs_and_an_empty_folder(tmp_path: Path) -> None:
    evals, benches = committed_results()
    assert evals.height > 0 and benches.height > 0 and {"run", "max_docs", "speedup", "strict_f1"} <= set(evals.columns)
    assert benches.columns == ["run", "config", "max_docs", "seconds", "docs_per_second", "calls", "lost"]
    (tmp_path / "calibration").mkdir()
    (tmp_path / "calibration" / "results.json").write_text(json.dumps({"kind": "calibration"}))
    evals, benches = committed_results(tmp_path)
    assert evals.height == 0 and benches.height == 0 and "strict_f1" in evals.columns
