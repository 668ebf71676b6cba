"""Compiled programs: ``optimize`` compiles the extractor with a DSPy optimizer on training
documents, ``--program`` applies what it chose; the guarantees (grounding, ids, no evaluated
document shown as a demo, no held-out split tuned on) hold for a compiled program too."""

from __future__ import annotations

import json
from pathlib import Path

import dspy
import pytest
from dspy.utils.dummies import DummyLM

from toolkit.cli import main
from toolkit.core import Document
from toolkit.corpora import iter_gold
from toolkit.extraction import (
    DocumentIn,
    DocumentOut,
    EntityOut,
    ExtractionSettings,
    demo_ids,
    load_program,
    save_program,
)
from toolkit.jobs import extractor_for
from toolkit.measure import evaluate, optimize
from toolkit.measure._optimize import Student, examples, strict_f1

FAST = "emulated:hosted-api@1000"  # the emulated provider, in real time 1000 times faster
SETTINGS = ExtractionSettings(entity_types=("DISEASE",), relationships=False)


def _program(path: Path, document: Document, mentions: list[str], settings: ExtractionSettings = SETTINGS) -> Path:
    """A program file whose one demo is ``document`` with ``mentions`` as its answer."""
    demo = dspy.Example(documents=[DocumentIn(id=document.id, text=document.text)], entity_types=["DISEASE"],
                        results=[DocumentOut(id=document.id, entities=[EntityOut(text=m, type="DISEASE")
                                                                        for m in mentions])])
    extractor = extractor_for(settings)
    extractor.predict.demos = [demo]
    return save_program(path, settings.to_dict(), extractor.dump_state(), {"optimizer": "by hand"})


def test_a_program_replaces_the_worked_examples(tmp_path: Path) -> None:
    shown = Document("train-7", "Familial hypercholesterolemia is a disorder of lipid metabolism.")
    path = _program(tmp_path / "program.json", shown, ["Familial hypercholesterolemia"])
    settings = ExtractionSettings(entity_types=("DISEASE",), relationships=False, program=str(path))
    messages, _ = extractor_for(settings).messages([Document("x1", "Some text.")])
    prompt = "\n".join(m["content"] for m in messages)
    assert "Familial hypercholesterolemia is a disorder" in prompt and "example-1" not in prompt
    assert demo_ids(settings) == {"train-7"}  # kept out of any evaluation
    with pytest.raises(ValueError, match="compiled for other settings.*entity_types"):
        extractor_for(ExtractionSettings(entity_types=("GENE",), program=str(path)))


def test_a_compiled_program_keeps_the_guarantees(tmp_path: Path) -> None:
    """Its answers are validated as any: an ungrounded mention or a leak is dropped, ids kept."""
    path = _program(tmp_path / "program.json", Document("t1", "Asthma is common."), ["Asthma"])
    docs = [Document("d1", "Cystic fibrosis affects the lungs."), Document("d2", "Gout affects joints.")]
    lm = DummyLM([{"results": json.dumps([{"id": "d1", "entities": [{"text": "Cystic fibrosis", "type": "DISEASE"},
                                                                   {"text": "Gout", "type": "DISEASE"},
                                                                   {"text": "malaria", "type": "DISEASE"}]},
                                          {"id": "d2", "entities": [{"text": "Gout", "type": "DISEASE"}]}])}])
    settings = ExtractionSettings(entity_types=("DISEASE",), relationships=False, program=str(path))
    with dspy.context(lm=lm):
        validated = extractor_for(settings)(docs).validated
    assert {d: [e.text for e in v] for d, v in validated.entities.items()} == {"d1": ["Cystic fibrosis"],
                                                                               "d2": ["Gout"]}
    assert (validated.counts.leaks, validated.counts.ungrounded) == (1, 1)


def test_eval_refuses_a_program_that_shows_an_evaluated_document(tmp_path: Path, ncbi_devel: Path) -> None:
    document, gold = next(iter(iter_gold(str(ncbi_devel))))
    path = _program(tmp_path / "program.json", document, [gold[0].text])
    with pytest.raises(ValueError, match="another split"):
        evaluate(str(ncbi_devel), lm=FAST, limit=4, max_docs=(4,), program=str(path))


@pytest.mark.parametrize("body, why", [(None, "not found"), ("{not json", "not a program file"),
                                       ('{"format": 99, "state": {}}', "format 1")])
def test_a_damaged_program_file_is_refused_clearly(tmp_path: Path, body: str | None, why: str) -> None:
    path = tmp_path / "program.json"
    if body is not None:
        path.write_text(body)
    with pytest.raises(ValueError, match=why):
        load_program(path)


def test_the_metric_is_a_documents_strict_f1() -> None:
    example = dspy.Example(documents=[DocumentIn(id="d1", text="Asthma and gout.")], entity_types=["DISEASE"],
                           results=[DocumentOut(id="d1", entities=[EntityOut(text="Asthma", type="DISEASE"),
                                                                   EntityOut(text="gout", type="DISEASE")])])
    with dspy.context(lm=DummyLM([{"results": '[{"id": "d1", "entities": [{"text": "Asthma", "type": "DISEASE"}]}]'}])):
        prediction = Student(SETTINGS)(documents=example.documents)
    assert strict_f1(example, prediction) == pytest.approx(2 / 3)  # P 1, R 1/2
    empty = dspy.Example(documents=[DocumentIn(id="d2", text="Nothing.")], entity_types=["DISEASE"],
                         results=[DocumentOut(id="d2", entities=[])])
    with dspy.context(lm=DummyLM([{"results": '[{"id": "d2", "entities": []}]'}])):
        assert strict_f1(empty, Student(SETTINGS)(documents=empty.documents)) == 1.0  # nothing to find, none found


def test_a_bootstrapped_demo_shows_the_validated_answer_only() -> None:
    """The trace an optimizer turns into a demo holds the answer as validated: grounded mentions
    under their own document, never the raw reply."""
    lm = DummyLM([{"results": '[{"id": "d1", "entities": [{"text": "Asthma", "type": "DISEASE"}, '
                              '{"text": "malaria", "type": "DISEASE"}]}]'}])
    with dspy.context(lm=lm, trace=[]):
        Student(SETTINGS)(documents=[DocumentIn(id="d1", text="Asthma is common.")])
        _, _, outputs = dspy.settings.trace[-1]
    assert [[e.text for e in r.entities] for r in outputs.results] == [["Asthma"]]


def test_optimize_refuses_a_held_out_split_and_scores_on_other_documents(tmp_path: Path, ncbi_devel: Path,
                                                                ncbi_train: Path) -> None:
    test_split = tmp_path / "test.pubtator"
    test_split.write_text(ncbi_devel.read_text())
    with pytest.raises(ValueError, match="held-out test split"):
        optimize(str(ncbi_train), str(test_split), lm=FAST, out=tmp_path / "p.json")
    report = optimize(str(ncbi_train), str(ncbi_train), lm=FAST, out=tmp_path / "p.json", limit=4, dev_limit=3,
                      candidates=1)  # one split for both: the candidates are scored on its next documents
    first = [e.documents[0].id for e in examples(str(ncbi_train), 7)]
    assert set(report["demo_ids"]) <= set(first[:4]) and report["dev_documents"] == 3


def test_optimize_compiles_and_the_program_runs_on_every_command(tmp_path: Path, ncbi_devel: Path,
                                                                 ncbi_train: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "program.json"
    assert main(["optimize", "--gold", str(ncbi_train), "--dev", str(ncbi_devel), "--lm", FAST, "--limit", "6",
                 "--dev-limit", "3", "--candidates", "1", "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)  # DSPy's progress goes to stderr
    train_ids = {e.documents[0].id for e in examples(str(ncbi_train), 6)}
    assert report["program"] == str(out) and set(report["demo_ids"]) <= train_ids
    assert 0 <= report["dev_score"] <= 1 and 0 <= report["uncompiled_dev_score"] <= 1
    program = load_program(out)
    assert program.settings["entity_types"] == ["DISEASE"] and program.meta["optimizer"] == "bootstrap"
    assert main(["eval", "--gold", str(ncbi_devel), "--lm", FAST, "--limit", "4", "--max-docs", "4",
                 "--program", str(out), "--resamples", "0", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["settings"]["program"] == str(out) and all(r["lost"] == 0 for r in result["configs"])

