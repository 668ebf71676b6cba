"""The user's own model, run for real (``-m local_model``): a GGUF file by path, a Hugging Face
download from a pre-filled cache in offline mode, the exact parallel layout on the two other
registered models (another architecture and size, other weight types), and the fallback to
``local:fast`` with its reason.

The "user's file" is the smallest registered model with one byte of its name changed, so its
sha256 is its own (it is not recognised as the registered model) while llama.cpp runs it the same.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

import toolkit
from toolkit.cli import main
from toolkit.extraction import ExtractionSettings
from toolkit.jobs import RunSettings
from toolkit.lm import _weights as weights

sys.path.insert(0, str(Path(__file__).parent))
from test_weights import fill_hub_cache  # noqa: E402 - the hub cache layout, shared with the fast tests

pytestmark = [pytest.mark.local_model, pytest.mark.slow]

DOCUMENTS = {
    "u1": "Patients with cystic fibrosis often develop chronic lung infections.",
    "u2": "Mutations in BRCA1 raise the risk of breast cancer and ovarian cancer.",
    "u3": "Children with asthma were treated with inhaled corticosteroids.",
    "u4": "Type 2 diabetes is a risk factor for chronic kidney disease.",
}
SETTINGS = RunSettings(max_docs=4, extraction=ExtractionSettings(entity_types=("DISEASE",), relationships=False,
                                                                 max_entities_per_doc=4))


def registered(name: str) -> Path:
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (extra 'local')")
    path = weights.cached_path(name)
    if path is None:
        message = f"{name} is not cached: run `python -m toolkit models fetch {name}`"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="module")
def user_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """smollm2-135m's file, renamed inside (``general.name``: one byte), as a user's own GGUF."""
    data = bytearray(registered("smollm2-135m").read_bytes())
    at = data.index(b"Smollm2 135M", 0, 1 << 16)
    data[at:at + 1] = b"U"
    path = tmp_path_factory.mktemp("own") / "My-SmolLM2-Q4_1.gguf"
    path.write_bytes(data)
    return path


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in DOCUMENTS.items()))
    return path


def _check_run(summary: dict[str, Any], name: str, digest: str) -> None:
    assert summary["model_id"] == f"{name}@sha256:{digest[:16]}", summary["model_id"]
    assert summary["lost"] == 0 and summary["extracted"] + summary["failed"] == len(DOCUMENTS), summary


def test_a_gguf_file_by_path_runs_extract_and_is_named_by_its_sha256(user_gguf: Path, corpus: Path, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str],
                                                                    no_network: list) -> None:
    digest = hashlib.sha256(user_gguf.read_bytes()).hexdigest()
    result = toolkit.run(str(corpus), lm=f"local:{user_gguf}", settings=SETTINGS,
                         store=f"sqlite:///{tmp_path / 'a.db'}", progress=False)
    _check_run(result.summary.to_json(), "My-SmolLM2-Q4_1", digest)
    assert result.summary.lm == f"local:{user_gguf}"
    code = main(["extract", "--corpus", str(corpus), "--lm", f"local:{user_gguf}", "--max-docs", "4", "--types",
                 "DISEASE", "--no-relationships", "--db", f"sqlite:///{tmp_path / 'b.db'}", "--json"])
    assert code == 0
    _check_run(json.loads(capsys.readouterr().out)["summary"], "My-SmolLM2-Q4_1", digest)
    assert not no_network


def test_a_hub_download_runs_offline_from_a_prefilled_cache(user_gguf: Path, corpus: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str],
                                                           no_network: list) -> None:
    """``local:hf:`` and ``hf://`` through the real ``hf_hub_download``, HF_HUB_OFFLINE=1, on a
    cache laid out as a download leaves it (blob named by its sha256, snapshot link, refs/main)."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    digest = hashlib.sha256(user_gguf.read_bytes()).hexdigest()
    fill_hub_cache(tmp_path / "hf", "acme/SmolLM2-135M-Instruct-GGUF", "smollm2-135m-instruct-q4_1.gguf", user_gguf)
    spec = "acme/SmolLM2-135M-Instruct-GGUF/smollm2-135m-instruct-q4_1.gguf"
    code = main(["extract", "--corpus", str(corpus), "--lm", f"local:hf:{spec}", "--max-docs", "4", "--types",
                 "DISEASE", "--no-relationships", "--db", f"sqlite:///{tmp_path / 'a.db'}", "--json"])
    assert code == 0
    _check_run(json.loads(capsys.readouterr().out)["summary"], "smollm2-135m-instruct-q4_1", digest)
    result = toolkit.run(str(corpus), lm=f"hf://{spec}", settings=SETTINGS, store=f"sqlite:///{tmp_path / 'b.db'}",
                         progress=False)
    _check_run(result.summary.to_json(), "smollm2-135m-instruct-q4_1", digest)
    assert not no_network


# ------------------------------------------------------------------------- the exact layout
def _prompts(devel: Path, count: int) -> list[tuple[list[dict[str, str]], dict[str, Any], int]]:
    from toolkit.corpora import iter_pubtator
    from toolkit.extraction import BatchExtractor, response_schema

    settings = ExtractionSettings(entity_types=("DISEASE",), relationships=False)
    extractor = BatchExtractor(settings, "parallel")
    prompts = []
    for document, _ in list(iter_pubtator(devel))[:count]:
        messages, _ = extractor.messages([document])
        prompts.append((messages, response_schema([document.id], settings)["json_schema"]["schema"], 96))
    return prompts


class Recorder:
    """The exact layout's own outputs, recorded as it computes them: each sequence's logits at
    every step, as a digest of their bytes (the layout itself runs unchanged)."""

    def __init__(self, kv: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        from toolkit.lm._kvlayout import ExactKV

        assert isinstance(kv, ExactKV)
        self.logits: dict[int, list[str]] = {}
        prompt, step = kv.prompt, kv.step

        def recorded_prompt(*args: Any) -> Any:
            self.logits = {}  # a new call: ExactKV.prompt's first logits come from its step
            return prompt(*args)

        def recorded_step(items: list) -> Any:
            out = step(items)
            for (s, _, _), values in zip(items, out):
                self.logits.setdefault(s, []).append(hashlib.sha256(values.tobytes()).hexdigest())
            return out

        monkeypatch.setattr(kv, "prompt", recorded_prompt)
        monkeypatch.setattr(kv, "step", recorded_step)


@pytest.mark.parametrize("model", ["qwen2.5-0.5b", "smollm2-135m"])
def test_answers_in_a_batch_equal_answers_alone_on_other_models(model: str, ncbi_devel: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Batch invariance by construction on the two other registered models: qwen2.5-0.5b (Qwen2,
    Q4_K, Q6_K, Q5_0 and Q8_0 matrices: the tiled and the tinyBLAS kernels) and smollm2-135m (Llama,
    Q4_1 and Q8_0: the per-row and the tinyBLAS kernels). Four NCBI abstracts, each alone and the
    four together: every sequence's logits are the same bytes at every step, so its answer is the
    same, token for token."""
    from toolkit.lm._local import LlamaEngine

    registered(model)
    engine = LlamaEngine(model, prompt_cache=False)
    assert engine.exact and engine.fallback is None
    prompts = _prompts(ncbi_devel, 4)
    engine.complete_many(prompts[:1])  # builds the decoder, so its layout can be recorded
    recorder = Recorder(engine._parallel._kv, monkeypatch)
    alone, alone_logits = [], []
    for prompt in prompts:
        alone += engine.complete_many([prompt])
        alone_logits.append(recorder.logits[0])
    together = engine.complete_many(prompts)
    assert [recorder.logits[s] for s in range(len(prompts))] == alone_logits
    assert [(a.text, a.completion_tokens, a.finish_reason) for a in together] == \
           [(a.text, a.completion_tokens, a.finish_reason) for a in alone]
    assert all(len(steps) >= 5 for steps in alone_logits)  # real answers: several sampled steps each
    engine._parallel.close()


def test_a_model_without_the_exact_layout_falls_back_to_fast_and_says_why(monkeypatch: pytest.MonkeyPatch,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """Where the kernel rules do not hold (here: a CPU family they were not measured on), the model
    runs ``local:fast``: one line on stderr says why and what that means, the model id says
    ``+fast``, and the run works."""
    import platform

    from toolkit.core import Document
    from toolkit.jobs import ExtractionService
    from toolkit.lm import _local as local, resolve_lm

    registered("smollm2-135m")
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    monkeypatch.setattr(local, "_ENGINES", {})
    resolved = resolve_lm("local:smollm2-135m")
    note = capsys.readouterr().err.strip()
    assert note == ("note: smollm2-135m: no exact parallel layout (its kernel rules are those of x86-64 CPUs, this "
                    "is aarch64); running local:fast: documents decoded together share one KV cache and the batch's "
                    "kernels, so a document's answer in a batch can differ from its answer alone where two tokens "
                    "nearly tie")
    assert not resolved.engine.exact and resolved.model_id == weights.locate("smollm2-135m").model_id + "+fast"
    resolve_lm("local:smollm2-135m")
    assert capsys.readouterr().err == ""  # said once per engine
    service = ExtractionService(resolved, ExtractionSettings(entity_types=("DISEASE",), relationships=False,
                                                             max_entities_per_doc=4))
    result = service.extract_batch([Document(i, t) for i, t in list(DOCUMENTS.items())[:2]])
    assert set(result.per_document_entities) | set(result.failed_document_ids) == {"u1", "u2"}
