"""Worked examples drawn from gold annotations (``--demos``): the choice, the prompt, the guard."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from toolkit.cli import main
from toolkit.core import Document
from toolkit.extraction import BatchExtractor, ExtractionSettings, gold_demos
from toolkit.jobs import demos_for
from toolkit.measure import evaluate

# ten hand-made abstracts: d0-d6 short and annotated, d7 long and annotated, d8 and d9 without mentions
TEXTS = {f"d{i}": f"Patients with ataxia type {i} and anemia were seen." for i in range(7)}
TEXTS["d7"] = "Ataxia and anemia. " * 20
TEXTS["d8"] = "Nothing to report here."
TEXTS["d9"] = "Nothing to report again."


def _pubtator(path: Path) -> Path:
    lines = []
    for doc_id, text in TEXTS.items():
        lines += [f"{doc_id}|t|", f"{doc_id}|a|{text}"]
        low = text.lower()
        if "ataxia" in low:
            a, n = low.index("anemia"), low.index("ataxia")
            # anemia listed first in the file, ataxia first in the text; a modifier and a repeat
            lines += [f"{doc_id}\t{a}\t{a + 6}\t{text[a:a + 6]}\tModifier\tD000740",
                      f"{doc_id}\t{n}\t{n + 6}\t{text[n:n + 6]}\tSpecificDisease\tD001259",
                      f"{doc_id}\t{a}\t{a + 6}\t{text[a:a + 6]}\tDiseaseClass\tD000740"]
        lines.append("")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_demos_are_short_annotated_documents_with_their_distinct_mentions_in_text_order(tmp_path: Path) -> None:
    gold = str(_pubtator(tmp_path / "gold.pubtator"))
    shown = gold_demos(gold, 3, ("DISEASE",))
    assert len(shown) == 3 and len({d.id for d, _ in shown}) == 3
    assert all(d.id in {f"d{i}" for i in range(7)} for d, _ in shown)  # not the long one, not the empty ones
    for _document, mentions in shown:
        assert mentions == (("ataxia", "DISEASE"), ("anemia", "DISEASE"))  # NCBI classes mapped, repeat once
    assert gold_demos(gold, 3, ("DISEASE",)) == shown  # the same settings show the same demos
    with pytest.raises(ValueError, match="mention GENE"):
        gold_demos(gold, 1, ("GENE",))
    with pytest.raises(ValueError, match="8 annotated documents"):
        gold_demos(gold, 9, ("DISEASE",))


def test_the_prompt_shows_the_gold_demos_instead_of_the_built_in_example(tmp_path: Path) -> None:
    gold = str(_pubtator(tmp_path / "gold.pubtator"))
    settings = ExtractionSettings(entity_types=("DISEASE",), relationships=False, demos=gold, shots=2)
    messages, _ = BatchExtractor(settings, demos=demos_for(settings)).messages([Document("x1", "Some text.")])
    prompt = "\n".join(m["content"] for m in messages)
    ids = [d.id for d, _ in gold_demos(gold, 2, ("DISEASE",))]
    assert all(f'"id": "{i}"' in prompt for i in ids) and "example-1" not in prompt
    assert '{"text": "ataxia", "type": "DISEASE"}, {"text": "anemia", "type": "DISEASE"}' in prompt
    with pytest.raises(ValueError, match="demos_for"):  # the module does not draw them itself
        BatchExtractor(settings)
    assert demos_for(ExtractionSettings(demo=False, demos=gold)) == []
    with pytest.raises(ValueError, match="shots"):
        ExtractionSettings(demos=gold, shots=0)


def test_eval_refuses_demos_drawn_from_the_evaluated_documents(tmp_path: Path) -> None:
    gold = str(_pubtator(tmp_path / "gold.pubtator"))
    with pytest.raises(ValueError, match="another split"):
        evaluate(gold, lm="emulated:hosted-api", limit=0, max_docs=(4,), demos=gold, shots=2)


def test_eval_with_training_demos_records_them(ncbi_devel: Path, ncbi_train: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "--gold", str(ncbi_devel), "--lm", "emulated:hosted-api", "--limit", "8", "--max-docs", "4",
                 "--demos", "ncbi-disease-train", "--shots", "3", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["settings"]["demos"] == "ncbi-disease-train" and result["settings"]["shots"] == 3
    assert [r["extracted"] for r in result["configs"]] == [8, 8]
