"""The tuner's prediction checked against its own measurement: on the emulated ``hosted-api`` profile
(whose latencies the emulator draws from the same profile, in virtual time) the speedup the planner
predicts and the one measured against one document per call agree within 5% at 2, 4, 8 and 16
documents per call. The measured point's documents per call are the packed ones (what the run sent),
and the prediction is made for those."""

from __future__ import annotations

import json

import pytest

from toolkit.corpora import synthetic_documents
from toolkit.notebook import Setting, TunerModel

DOCUMENTS = 48  # 16 per call: three full batches
TOLERANCE = 0.05


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> TunerModel:
    path = tmp_path_factory.mktemp("prediction") / "abstracts.jsonl"
    path.write_text("".join(json.dumps({"id": d.id, "text": d.text}) + "\n"
                            for d in synthetic_documents(DOCUMENTS, seed=11)))
    return TunerModel(str(path), lm="emulated:hosted-api", sample=DOCUMENTS)


@pytest.mark.parametrize("per_call", [2, 4, 8, 16])
def test_measured_and_predicted_speedups_agree_within_5_percent(model: TunerModel, per_call: int) -> None:
    point = model.measure(Setting(budget=16384, max_docs=per_call), n=DOCUMENTS)
    assert point["docs_per_call"] == per_call  # packed as asked: DOCUMENTS is a multiple of it
    measured, predicted = point["measured_speedup"], point["predicted_speedup"]
    assert measured > 1.0
    assert abs(predicted / measured - 1) <= TOLERANCE, f"{per_call} per call: predicted {predicted:.3f}x, " \
                                                       f"measured {measured:.3f}x"
