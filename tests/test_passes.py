"""Extraction passes (``--passes``) and the choice of worked examples (``--demo-choice``): a further
pass is a fresh extraction showing other demos, merged per document with the same checks, counted,
and in the parallel layout a document's answer after N passes equals its answer alone. (A pass
shown the answer so far and asked for what it missed was tried and measured worse: see
docs/measurements.md.)"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import dspy
import polars as pl
import pytest
from dspy.utils.dummies import DummyLM

from toolkit.cli import main
from toolkit.core import Document
from toolkit.extraction import ExtractionSettings, demo_ids, gold_demos, pass_demos, similar_demos
from toolkit.jobs import demos_for, extractor_for
from toolkit.lm._parallel import Generated
from toolkit.measure import evaluate

DOCS = [
    Document("d1", "Cystic fibrosis is a lung disease caused by mutations in CFTR."),
    Document("d2", "Patients with Huntington disease and chorea were treated with tetrabenazine."),
    Document("d3", "Asthma and eczema often occur together in atopic children."),
]
# sixteen annotated training abstracts: t0-t9 short (one to four mentions), t10-t15 long
TRAIN = {f"t{i}": " ".join(["Patients had"] + [f"disorder{i}x{k}" for k in range(1 + i % 4)]) + "."
         for i in range(10)}
TRAIN.update({f"t{i}": "A long abstract about disorderlong. " * 30 for i in range(10, 16)})


def _gold(path: Path) -> str:
    lines = []
    for doc_id, text in TRAIN.items():
        lines += [f"{doc_id}|t|", f"{doc_id}|a|{text}"]
        for match in re.finditer(r"disorder\w+", text):
            lines.append(f"{doc_id}\t{match.start()}\t{match.end()}\t{match.group()}\tSpecificDisease\tD0")
        lines.append("")
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture
def settings(tmp_path: Path) -> ExtractionSettings:
    return ExtractionSettings(entity_types=("DISEASE",), relationships=False, demos=_gold(tmp_path / "train.pubtator"),
                              shots=2, passes=2)


def _records(*records: tuple[str, list[str]]) -> dict[str, str]:
    return {"results": json.dumps([{"id": i, "entities": [{"text": t, "type": "DISEASE"} for t in found]}
                                   for i, found in records])}


def _named(validated: object) -> dict[str, list[tuple[str, int]]]:
    return {d: [(e.text, e.pass_no) for e in ents] for d, ents in validated.entities.items()}  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------------ the demos
def test_each_pass_shows_its_own_demos_and_pass_one_keeps_todays(settings: ExtractionSettings) -> None:
    groups = pass_demos(settings.demos, 2, ("DISEASE",), "random", 3)
    ids = [[d.id for d, _ in g] for g in groups]
    assert [len(g) for g in ids] == [2, 2, 2] and len({i for g in ids for i in g}) == 6  # none shown twice
    assert groups[0] == gold_demos(settings.demos, 2, ("DISEASE",))  # asking for passes keeps pass 1's demos
    assert demo_ids(settings) == {i for g in ids[:2] for i in g}  # every pass's demos are kept out of an eval
    shown = [json.dumps([str(x) for x in demos_for(settings, n)]) for n in (1, 2)]
    assert all(i in shown[0] for i in ids[0]) and not any(i in shown[0] for i in ids[1])
    assert all(i in shown[1] for i in ids[1])


def test_coverage_draws_dense_documents_of_every_form(settings: ExtractionSettings) -> None:
    """Coverage prefers the documents with the most mentions per character (here t3 and t7, four
    mentions each), never the long ones, and draws the same documents every time."""
    chosen = [d.id for d, _ in gold_demos(settings.demos, 2, ("DISEASE",), "coverage")]
    assert set(chosen) == {"t3", "t7"}
    assert chosen == [d.id for d, _ in gold_demos.__wrapped__(settings.demos, 2, ("DISEASE",), "coverage")]
    with pytest.raises(ValueError, match="demo choice"):
        gold_demos(settings.demos, 2, ("DISEASE",), "best")  # type: ignore[arg-type]


def test_similar_demos_are_chosen_for_each_calls_documents(settings: ExtractionSettings) -> None:
    """``similar``: the short training documents most like the call's (TF-IDF over words), the next
    ones for a later pass; any of them may be shown, so all are kept out of an evaluation."""
    query = [Document("q", "Seen with disorder3x1 and disorder3x2, then disorder7x0.")]
    first = [d.id for d, _ in similar_demos(settings.demos, 2, ("DISEASE",), query)]
    assert first == ["t3", "t7"] and [d.id for d, _ in similar_demos(settings.demos, 2, ("DISEASE",), query, 2)] \
        not in ([], first)
    similar = replace(settings, demo_choice="similar")
    assert demo_ids(similar) == {f"t{i}" for i in range(10)}  # the short ones, any of which may be shown
    extractor = extractor_for(similar, "parallel")
    one, _ = extractor.messages(query)
    two, _ = extractor.messages([Document("r", "Only disorder5x0 here.")])
    assert '"id": "t3"' in one[1]["content"] and '"id": "t5"' not in one[1]["content"]
    assert '"id": "t5"' in two[1]["content"]
    with pytest.raises(ValueError, match="each call"):
        gold_demos(settings.demos, 2, ("DISEASE",), "similar")


def test_settings_refuse_passes_without_other_demos_to_show(settings: ExtractionSettings) -> None:
    with pytest.raises(ValueError, match="passes must be at least 1"):
        ExtractionSettings(passes=0)
    with pytest.raises(ValueError, match="other worked examples"):
        ExtractionSettings(passes=2)  # the built-in example is one: a fresh pass would repeat the first
    with pytest.raises(ValueError, match="demo choice"):
        ExtractionSettings(demo_choice="best")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="further passes"):
        from toolkit.extraction import BatchExtractor
        BatchExtractor(settings, demos=demos_for(settings))  # the module does not draw pass 2's demos itself


def test_the_batch_api_refuses_passes_instead_of_running_one(settings: ExtractionSettings) -> None:
    """A batch API line is one call: passes would be silently dropped, so the settings say so."""
    from toolkit.jobs import RunSettings

    with pytest.raises(ValueError, match="one pass per batch"):
        RunSettings(mode="batch-api", extraction=settings)
    assert RunSettings(mode="batch-api", extraction=replace(settings, passes=1)).mode == "batch-api"


# ------------------------------------------------------------------------------------ the merge
def test_a_second_pass_adds_grounded_mentions_new_to_each_document(settings: ExtractionSettings) -> None:
    lm = DummyLM([_records(("d1", ["Cystic fibrosis"]), ("d2", ["Huntington disease"]), ("d3", ["Asthma"])),
                  _records(("d1", ["cystic  fibrosis", "lung disease", "malaria"]), ("d2", ["chorea"]),
                           ("d3", ["Asthma", "eczema", "chorea"]))])
    with dspy.context(lm=lm):
        prediction = extractor_for(settings)(DOCS)
    validated = prediction.validated
    assert _named(validated) == {"d1": [("Cystic fibrosis", 1), ("lung disease", 2)],
                                 "d2": [("Huntington disease", 1), ("chorea", 2)],
                                 "d3": [("Asthma", 1), ("eczema", 2)]}
    counts = validated.counts
    assert (counts.pass_calls, counts.pass_entities, counts.entities) == (1, 3, 6)
    assert (counts.ungrounded, counts.leaks) == (1, 1)  # the second pass's answer is checked like the first
    assert not validated.missing_ids and prediction.documents_asked == 6
    first, second = (json.dumps(h["messages"]) for h in lm.history[-2:])
    one, two = ([d.id for d, _ in g] for g in pass_demos(settings.demos, 2, ("DISEASE",), "random", 2))
    assert all(i in first for i in one) and all(i in second for i in two) and not any(i in second for i in one)


def test_a_pass_that_leaves_a_document_out_does_not_lose_it(settings: ExtractionSettings) -> None:
    lm = DummyLM([_records(("d1", ["Cystic fibrosis"]), ("d2", []), ("d3", ["Asthma"])),
                  _records(("d1", ["lung disease"]))])
    with dspy.context(lm=lm):
        validated = extractor_for(settings)(DOCS).validated
    assert _named(validated) == {"d1": [("Cystic fibrosis", 1), ("lung disease", 2)], "d2": [], "d3": [("Asthma", 1)]}
    assert not validated.missing_ids and validated.counts.missing_ids == 0


def test_a_document_missing_after_the_first_pass_is_not_asked_again(settings: ExtractionSettings) -> None:
    """It is missing (the executor re-sends the document, and its passes run then)."""
    lm = DummyLM([_records(("d1", ["Cystic fibrosis"])), _records(("d1", ["lung disease"]))])
    with dspy.context(lm=lm):
        validated = extractor_for(settings)(DOCS[:2]).validated
    assert validated.missing_ids == ["d2"] and "Huntington" not in json.dumps(lm.history[-1]["messages"][-1])


class PromptEngine:
    """Answers each one-document prompt from the prompt alone (as a deterministic model does): the
    words of the document that the demos' ids "select" by their length's parity."""

    def __init__(self) -> None:
        self.prompts = 0
        self.allowances: list[int] = []

    def complete_many(self, prompts: list, until: object = None) -> list[Generated]:
        self.prompts += len(prompts)
        out = []
        for messages, schema, allowance in prompts:
            self.allowances.append(allowance)
            doc_id = schema["properties"]["results"]["items"]["properties"]["id"]["enum"][0]
            text = json.loads(messages[-1]["content"].split("[[ ## documents ## ]]")[1].split("[[ ##")[0])[0]["text"]
            demos = re.findall(r'"id": "t(\d+)"', "".join(m["content"] for m in messages))
            parity = sum(set(map(int, demos))) % 2
            words = [w.strip(".,") for w in text.split() if len(w.strip(".,")) % 2 == parity]
            out.append(Generated(json.dumps({"results": [{"id": doc_id, "entities": [
                {"text": w, "type": "DISEASE"} for w in words[:4]]}]}), 50, 10, "stop"))
        return out


class PromptLM:
    def __init__(self, engine: PromptEngine) -> None:
        self.engine = engine


@pytest.mark.parametrize("choice", ["random", "similar"])
def test_in_the_parallel_layout_each_answer_after_two_passes_equals_its_answer_alone(
        settings: ExtractionSettings, choice: str) -> None:
    engine = PromptEngine()
    extractor = extractor_for(replace(settings, demo_choice=choice), "parallel")
    with dspy.context(lm=PromptLM(engine)):
        together = _named(extractor(DOCS).validated)
        for _ in range(10):  # the run learns that replies are short: the first pass's allowance shrinks
            extractor.sizer.observe(1, 20, truncated=False)
        alone = {d.id: _named(extractor([d]).validated)[d.id] for d in DOCS}
    assert together == alone and engine.prompts == 4 * len(DOCS)
    later = engine.allowances[len(DOCS):2 * len(DOCS)] + engine.allowances[2 * len(DOCS) + 1::2]
    assert later == [settings.max_tokens(1)] * 2 * len(DOCS)  # a later pass: the ceiling, whatever was learned
    assert engine.allowances[2 * len(DOCS)] < settings.max_tokens(1)
    assert any(p == 2 for found in together.values() for _, p in found)  # the second pass added mentions


# ------------------------------------------------------------------------------------ eval and the CLI
def test_eval_refuses_a_later_pass_demo_among_the_evaluated_documents(settings: ExtractionSettings) -> None:
    """Pass 2's demos are kept out of an evaluation like pass 1's."""
    later = next(d.id for d, _ in pass_demos(settings.demos, 1, ("DISEASE",), "random", 2)[1])
    with pytest.raises(ValueError, match=f"another split.*|.*{later}"):
        evaluate(settings.demos, lm="emulated:hosted-api", limit=0, max_docs=(4,), demos=settings.demos, shots=1,
                 passes=2)


def test_eval_shows_what_each_pass_added(ncbi_devel: Path, ncbi_train: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "--gold", str(ncbi_devel), "--lm", "emulated:hosted-api", "--limit", "8", "--max-docs", "4",
                 "--demos", "ncbi-disease-train", "--demo-choice", "coverage", "--passes", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["settings"]["passes"] == 2 and result["settings"]["demo_choice"] == "coverage"
    for row in result["configs"]:
        assert len(row["strict_f1_by_pass"]) == 2 and row["strict_f1_by_pass"][-1] == pytest.approx(row["strict_f1"])
        assert row["pass_calls"] > 0 and row["lost"] == 0
    assert main(["eval", "--gold", str(ncbi_devel), "--lm", "emulated:hosted-api", "--limit", "8", "--max-docs", "4",
                 "--demos", "ncbi-disease-train", "--passes", "2", "--out", str(tmp_path / "out")]) == 0
    assert "strict_f1_by_pass" in capsys.readouterr().out
    table = pl.read_csv(tmp_path / "out" / "configs.csv")  # the F1 after each pass, a column each
    assert table["strict_f1_pass_2"].to_list() == pytest.approx(table["strict_f1"].to_list())
