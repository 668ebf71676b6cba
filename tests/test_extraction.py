"""Parsing, repair and validation of batch replies; the DSPy module on scripted and emulated LMs."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

import dspy
import pytest
from dspy.utils.dummies import DummyLM

from toolkit.core import Document
from toolkit.execution._errors import MalformedReply, classify
from toolkit.extraction import (
    BatchExtractor,
    ExtractionSettings,
    RawReply,
    ReplyParseError,
    end_repetition,
    parse_reply,
    response_schema,
    validate_reply,
)
from toolkit.lm._parallel import Generated

DOCS = [
    Document("d1", "Cystic fibrosis is caused by mutations in CFTR."),
    Document("d2", "Patients with  Huntington\ndisease were treated with tetrabenazine."),
]
SETTINGS = ExtractionSettings.preset("biomedical")


def reply(*records: dict) -> RawReply:
    return RawReply(items=list(records))


# ------------------------------------------------------------------------------------ parse_reply
def test_parse_strict_json_is_not_marked_repaired() -> None:
    parsed = parse_reply(json.dumps({"results": [{"id": "d1", "entities": []}]}))
    assert parsed.items == [{"id": "d1", "entities": []}] and not parsed.repaired


def test_parse_accepts_fenced_json_and_bare_lists() -> None:
    assert parse_reply('```json\n[{"id": "d1", "entities": []}]\n```').items[0]["id"] == "d1"
    assert parse_reply('{"documents": [{"id": "d2"}]}').items == [{"id": "d2"}]


def test_truncated_reply_is_repaired_and_keeps_complete_records() -> None:
    text = '{"results": [{"id": "d1", "entities": [{"text": "CFTR", "type": "GENE"}]}, {"id": "d2", "entit'
    parsed = parse_reply(text)
    assert parsed.repaired
    assert parsed.items[0] == {"id": "d1", "entities": [{"text": "CFTR", "type": "GENE"}]}


@pytest.mark.parametrize("text", ["", "I could not find any entities.", '"just a string"', "42"])
def test_unusable_reply_raises_malformed(text: str) -> None:
    with pytest.raises(MalformedReply):
        parse_reply(text)


def test_a_parse_error_is_typed_for_dspy_and_for_the_executor() -> None:
    """DSPy's adapters see their own AdapterParseError (and re-raise it: no second call through
    another adapter); the executor sees a malformed reply, its message short enough for a reason."""
    with pytest.raises(ReplyParseError) as caught:
        parse_reply("I could not find any entities.")
    error = caught.value
    assert isinstance(error, dspy.utils.exceptions.AdapterParseError) and isinstance(error, MalformedReply)
    assert classify(error) is error and error.kind == "malformed"
    assert str(error).startswith("reply has no list") and error.lm_response == "I could not find any entities."
    lm = DummyLM([{"results": "no JSON here"}])
    with dspy.context(lm=lm), pytest.raises(ReplyParseError):
        BatchExtractor(SETTINGS)(DOCS)
    assert len(lm.history) == 1


# --------------------------------------------------------------------------------- validate_reply
def test_grounding_ignores_case_and_whitespace_and_records_offsets() -> None:
    out = validate_reply(reply(
        {"id": "d2", "entities": [{"text": "huntington disease", "type": "disease"}]},
        {"id": "d1", "entities": []},
    ), DOCS, SETTINGS)
    (entity,) = out.entities["d2"]
    assert entity.type == "DISEASE" and entity.source_document_id == "d2"
    assert DOCS[1].text[entity.start:entity.end] == "Huntington\ndisease"
    assert out.entities["d1"] == [] and out.missing_ids == []
    assert out.counts.entities == 1 and out.counts.ungrounded == 0


def test_entity_of_another_document_is_a_leak_not_stored() -> None:
    out = validate_reply(reply(
        {"id": "d1", "entities": [{"text": "tetrabenazine", "type": "DRUG"}, {"text": "CFTR", "type": "GENE"}]},
        {"id": "d2", "entities": [{"text": "kinase X", "type": "PROTEIN"}]},
    ), DOCS, SETTINGS)
    assert [e.text for e in out.entities["d1"]] == ["CFTR"]
    assert out.entities["d2"] == []
    assert (out.counts.leaks, out.counts.ungrounded, out.counts.entities) == (1, 1, 1)


def test_missing_unknown_and_duplicate_ids() -> None:
    out = validate_reply(reply(
        {"id": "d1", "entities": [{"text": "CFTR", "type": "GENE"}]},
        {"id": "d1", "entities": [{"text": "cftr", "type": "GENE"}, {"text": "Cystic fibrosis", "type": "DISEASE"}]},
        {"id": "zz", "entities": [{"text": "CFTR", "type": "GENE"}]},
        {"entities": []},
    ), DOCS, SETTINGS)
    assert out.missing_ids == ["d2"] and "d2" not in out.entities
    assert [e.text for e in out.entities["d1"]] == ["CFTR", "Cystic fibrosis"]
    c = out.counts
    assert (c.unknown_ids, c.duplicate_records, c.duplicates, c.malformed_records, c.missing_ids) == (1, 1, 1, 1, 1)


def test_types_not_asked_for_and_malformed_entities_are_dropped() -> None:
    settings = ExtractionSettings(entity_types=("DISEASE",))
    out = validate_reply(reply({"id": "d1", "entities": [
        {"text": "CFTR", "type": "GENE"}, {"text": "", "type": "DISEASE"}, "Cystic fibrosis",
        {"text": "Cystic fibrosis", "type": "DISEASE"},
    ]}, {"id": "d2", "entities": []}), DOCS, settings)
    assert [e.text for e in out.entities["d1"]] == ["Cystic fibrosis"]
    assert out.counts.dropped == 3 and out.entities["d2"] == []


@pytest.mark.parametrize("record", [{"id": "d2"}, {"id": "d2", "entities": None}, {"id": "d2", "entities": "none"},
                                    {"id": "d2", "entities": {"text": "asthma"}}])
def test_a_record_that_says_nothing_is_malformed_not_zero_entities(record: dict) -> None:
    """A record whose entities are missing, null or not a list is no answer: the document is missing
    (re-sent, then failed), never stored as extracted with zero entities."""
    out = validate_reply(reply({"id": "d1", "entities": []}, record), DOCS, ExtractionSettings())
    assert out.missing_ids == ["d2"] and "d2" not in out.entities and out.counts.malformed_records == 1


def test_relationships_must_link_kept_entities() -> None:
    out = validate_reply(reply({"id": "d1", "entities": [
        {"text": "Cystic fibrosis", "type": "DISEASE"}, {"text": "CFTR", "type": "GENE"}],
        "relationships": [{"source": "CFTR", "target": "cystic fibrosis", "type": "causes"},
                          {"source": "CFTR", "target": "insulin", "type": "binds"}, {"source": "CFTR"}]},
        {"id": "d2", "entities": []}), DOCS, SETTINGS)
    (rel,) = out.relationships["d1"]
    assert (rel.source, rel.type, rel.source_document_id) == ("CFTR", "CAUSES", "d1")
    assert out.counts.dropped_relationships == 2


def test_response_schema_pins_ids_types_and_bounds() -> None:
    settings = ExtractionSettings(entity_types=("DISEASE", "GENE"), relationships=False, max_entities_per_doc=7)
    schema = response_schema(["a", "b"], settings)["json_schema"]["schema"]
    results = schema["properties"]["results"]
    record = results["items"]["properties"]
    assert results["maxItems"] == 2 and record["id"]["enum"] == ["a", "b"]
    assert record["entities"]["maxItems"] == 7
    assert record["entities"]["items"]["properties"]["type"]["enum"] == ["DISEASE", "GENE"]
    assert "relationships" not in record


def test_settings_validate_and_presets() -> None:
    assert "DISEASE" in ExtractionSettings.preset("biomedical").entity_types
    assert "PERSON" in ExtractionSettings.preset("general").entity_types
    assert ExtractionSettings(entity_types=("disease",)).entity_types == ("DISEASE",)
    with pytest.raises(ValueError, match="unknown entity preset"):
        ExtractionSettings.preset("legal")
    with pytest.raises(ValueError):
        ExtractionSettings(entity_types=())


def test_prompt_has_no_entity_quota() -> None:
    lm = DummyLM([{"results": "[]"}])
    with dspy.context(lm=lm):
        BatchExtractor(SETTINGS)(DOCS)
    prompt = json.dumps(lm.history[-1]["messages"]).lower()
    assert "at least" not in prompt and "d1" in prompt and "huntington" in prompt


# ---------------------------------------------------------------------------- through the module
def test_module_validates_a_scripted_leaky_reply() -> None:
    scripted = [{"id": "d1", "entities": [{"text": "Huntington disease", "type": "DISEASE"}]},
                {"id": "d2", "entities": [{"text": "tetrabenazine", "type": "DRUG"}]}]
    with dspy.context(lm=DummyLM([{"results": json.dumps(scripted)}])):
        validated = BatchExtractor(SETTINGS)(DOCS).validated
    assert validated.entities["d1"] == [] and validated.counts.leaks == 1
    assert [e.text for e in validated.entities["d2"]] == ["tetrabenazine"]


def test_the_async_path_is_the_sync_path() -> None:
    scripted = {"results": '[{"id": "d1", "entities": [{"text": "CFTR", "type": "GENE"}]}]'}
    for layout in ("packed", "parallel"):
        predictions = []
        for run in (lambda ex: ex(DOCS), lambda ex: asyncio.run(ex.acall(DOCS))):
            with dspy.context(lm=DummyLM([scripted, {"results": "no JSON here"}])):
                predictions.append(run(BatchExtractor(SETTINGS, layout)))
        sync, async_ = predictions
        assert sync.validated == async_.validated and sync.documents_asked == async_.documents_asked
        assert [e.text for e in sync.validated.entities["d1"]] == ["CFTR"] and sync.validated.missing_ids == ["d2"]


def test_the_module_shows_the_demos_it_is_given() -> None:
    """Demos are the predictor's, as DSPy's ``Predict.demos``: the caller's, else the built-in example."""
    assert len(BatchExtractor(SETTINGS).predict.demos) == 1
    assert BatchExtractor(ExtractionSettings(demo=False)).predict.demos == []
    lm = DummyLM([{"results": "[]"}])
    with dspy.context(lm=lm):
        BatchExtractor(SETTINGS, demos=[])(DOCS[:1])
    assert [m["role"] for m in lm.history[-1]["messages"]] == ["system", "user"]


def test_single_document_variant_is_the_same_module() -> None:
    with dspy.context(lm=DummyLM([{"results": '[{"id": "d1", "entities": [{"text": "CFTR", "type": "GENE"}]}]'}])):
        validated = BatchExtractor(SETTINGS)(DOCS[:1]).validated
    assert [e.text for e in validated.entities["d1"]] == ["CFTR"]
    with pytest.raises(ValueError):
        BatchExtractor(SETTINGS)([])


class TogetherEngine:
    """An engine that answers several prompts at once, as the local model's does (scripted)."""

    def __init__(self, answers: list[tuple[str, str]]) -> None:
        self.answers = answers  # (text, finish_reason) per prompt
        self.prompts: list = []

    def complete_many(self, prompts: list, until: object = None) -> list[Generated]:
        self.prompts.extend(prompts)
        self.until = until
        return [Generated(text, 100, 10, reason) for text, reason in self.answers[: len(prompts)]]


class TogetherLM:
    def __init__(self, engine: TogetherEngine) -> None:
        self.engine = engine


def test_parallel_layout_gives_every_document_the_one_document_prompt() -> None:
    """Decoded together, each document sees exactly the prompt it would get alone; a reply cut off
    by max_tokens leaves its document missing (the executor re-sends it)."""
    engine = TogetherEngine([('{"results": [{"id": "d1", "entities": [{"text": "CFTR", "type": "GENE"}]}]}', "stop"),
                             ('{"results": [{"id": "d2", "entities": [{"text": "tetrabena', "length")])
    with dspy.context(lm=TogetherLM(engine)):
        prediction = BatchExtractor(SETTINGS, "parallel")(DOCS)
    lm = DummyLM([{"results": "[]"}])
    with dspy.context(lm=lm):
        BatchExtractor(SETTINGS)(DOCS[1:])
    assert engine.prompts[1][0] == lm.history[-1]["messages"]  # the same messages as a one-document call
    assert engine.prompts[1][1]["properties"]["results"]["items"]["properties"]["id"]["enum"] == ["d2"]
    assert [e.text for e in prediction.validated.entities["d1"]] == ["CFTR"]
    assert prediction.validated.missing_ids == ["d2"] and prediction.cut == ["d2"]
    assert prediction.usage == (200, 20, 0) and prediction.documents_asked == 2
    assert engine.until("x") is None  # loops are ended by end_repetition


def test_an_answer_ended_at_a_loop_is_kept_and_counted() -> None:
    engine = TogetherEngine([('{"results": [{"id": "d1", "entities": [{"text": "CFTR", "type": "GENE"}]}]}', "repeat"),
                             ('{"results": [{"id": "d2", "entities": []}]}', "stop")])
    with dspy.context(lm=TogetherLM(engine)):
        validated = BatchExtractor(SETTINGS, "parallel")(DOCS).validated
    assert [e.text for e in validated.entities["d1"]] == ["CFTR"] and validated.entities["d2"] == []
    assert validated.counts.loops_ended == 1 and not validated.missing_ids


def test_parallel_layout_elsewhere_is_one_call_per_document() -> None:
    lm = DummyLM([{"results": '[{"id": "d1", "entities": [{"text": "CFTR", "type": "GENE"}]}]'},
                  {"results": '[{"id": "d2", "entities": [{"text": "tetrabenazine", "type": "DRUG"}]}]'}])
    with dspy.context(lm=lm):
        validated = BatchExtractor(SETTINGS, "parallel")(DOCS).validated
    assert {k: [e.text for e in v] for k, v in validated.entities.items()} == {"d1": ["CFTR"], "d2": ["tetrabenazine"]}
    one, two = (json.dumps(h["messages"]) for h in lm.history[-2:])
    assert "Cystic fibrosis" in one and "Cystic fibrosis" not in two and "Huntington" in two


def test_a_failed_first_call_fails_the_batch_a_later_one_keeps_the_answers() -> None:
    with dspy.context(lm=DummyLM([{"results": '[{"id": "d1", "entities": []}]'}, {"results": "no JSON here"}])):
        validated = BatchExtractor(SETTINGS, "parallel")(DOCS).validated
    assert validated.entities == {"d1": []} and validated.missing_ids == ["d2"]
    with dspy.context(lm=DummyLM([{"results": "no JSON here"}])), pytest.raises(ReplyParseError):
        BatchExtractor(SETTINGS, "parallel")(DOCS)


def test_layouts_resolve_by_lm_kind() -> None:
    from toolkit.lm import Capabilities

    local = Capabilities(tokenizer="x", layouts=("parallel", "packed"))
    provider = Capabilities(tokenizer="x")
    assert local.layout("auto") == "parallel" and provider.layout("auto") == "packed"
    assert local.layout("packed") == "packed"
    with pytest.raises(ValueError, match="decodes prompts together"):
        provider.layout("parallel")
    with pytest.raises(ValueError, match="unknown layout"):
        ExtractionSettings(layout="interleaved")
    with pytest.raises(ValueError, match="layout must be"):
        BatchExtractor(SETTINGS, "auto")


# ------------------------------------------------------------------ recorded replies of the real model
RECORDED = Path(__file__).resolve().parent / "data" / "recorded_replies.jsonl"


def recorded() -> list[dict]:
    return [json.loads(line) for line in RECORDED.read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("case", recorded(), ids=lambda c: c["model"])
def test_recorded_real_replies_validate_as_recorded(case: dict, ncbi_devel) -> None:
    """Replies the local models really gave for NCBI devel batches (texts read from ../shared)."""
    from toolkit.corpora import read_pubtator

    by_id = {d.id: d for d in read_pubtator(ncbi_devel)}
    documents = [by_id[i] for i in case["document_ids"]]
    settings = ExtractionSettings(entity_types=tuple(case["settings"]["entity_types"]), relationships=False)
    out = validate_reply(parse_reply(case["reply"]), documents, settings)
    counts = {k: v for k, v in out.counts.to_dict().items() if v}  # recorded before loops were counted
    assert counts == {k: v for k, v in case["counts"].items() if v}
    for doc_id, entities in out.entities.items():  # nothing kept under a document it is not in
        text = by_id[doc_id].text
        assert all(text[e.start:e.end].casefold().split() == e.text.casefold().split() for e in entities)
    assert out.missing_ids == [i for i in case["document_ids"] if i not in out.entities]


def test_recordings_cover_leaks_repair_and_missing_ids() -> None:
    counts = [c["counts"] for c in recorded()]
    assert any(c["leaks"] for c in counts) and any(c["repaired"] for c in counts)
    assert any(c["missing_ids"] for c in counts)


def test_output_allowance_learns_from_replies_and_grows_back_after_truncation() -> None:
    from toolkit.extraction import OutputSizer

    settings = ExtractionSettings(output_tokens_per_doc=256)
    sizer = OutputSizer(settings, warmup=3, window=10)
    assert sizer.allowance(4) == settings.max_tokens(4)  # nothing measured yet: the ceiling
    for _ in range(3):
        sizer.observe(documents=4, output_tokens=160, truncated=False)  # 40 per document, no spread
    assert sizer.allowance(4) == 160 and sizer.allowance(10) == 400
    sizer.observe(documents=1, output_tokens=10, truncated=False)
    sizer.observe(documents=1, output_tokens=70, truncated=False)
    mu, sigma = sizer.per_document()  # mean 560/14 = 40; variance (900 + 900) / (5 - 1) = 450
    assert mu == 40 and sigma == pytest.approx(450 ** 0.5)
    assert sizer.allowance(1) == math.ceil(40 + 3 * 450 ** 0.5)  # 104: one document varies a lot
    assert sizer.allowance(9) == math.ceil(360 + 3 * 450 ** 0.5 * 3)  # 551: 61 per document in a batch
    for _ in range(2):
        sizer.observe(documents=2, output_tokens=300, truncated=True)
    assert sizer.allowance(9) > 9 * 150  # cut-off replies count as needing the ceiling
    fixed = OutputSizer(ExtractionSettings(output_tokens_per_doc=256, adaptive_output=False), warmup=1)
    fixed.observe(4, 8, False)
    assert fixed.allowance(4) == settings.max_tokens(4)


def test_a_looping_reply_is_ended_at_its_last_new_entity() -> None:
    head = '{"results": [{"id": "x", "entities": ['
    entity = '{{"text": "{}", "type": "DISEASE"}}'
    loop = head + ", ".join(entity.format(t) for t in "ABCAB") + ", "  # a token may close the object with its comma
    ended = end_repetition(loop)
    assert ended is not None
    assert json.loads(ended) == json.loads(head + ", ".join(entity.format(t) for t in "ABC") + "]}]}")
    assert json.loads(end_repetition(head + ", ".join(entity.format(t) for t in "AAA"), relationships=True)) == {
        "results": [{"id": "x", "entities": [{"text": "A", "type": "DISEASE"}], "relationships": []}]}
    assert end_repetition(head + ", ".join(entity.format(t) for t in "ABA")) is None  # one repeat is not a loop
    assert end_repetition(head + ", ".join(entity.format(t) for t in "ABCAB") + ', {"text": "D') is None


def test_what_validation_drops_is_kept_per_document_with_where_a_leak_came_from() -> None:
    out = validate_reply(reply({"id": "d1", "entities": [
        {"text": "Cystic fibrosis", "type": "DISEASE"}, {"text": "Huntington disease", "type": "DISEASE"},
        {"text": "scurvy", "type": "DISEASE"}]}), DOCS, SETTINGS)
    assert [e.text for e in out.entities["d1"]] == ["Cystic fibrosis"]
    assert [(d.text, d.why, d.found_in) for d in out.dropped["d1"]] == [
        ("Huntington disease", "leak", "d2"), ("scurvy", "ungrounded", None)]
    from toolkit.core import DocumentBatch
    from toolkit.extraction import to_result

    result = to_result(DocumentBatch(), out, (None, None, None))
    assert result.per_document_dropped == out.dropped
