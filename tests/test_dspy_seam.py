"""The DSPy seam (issue 25, item 5): what the toolkit takes from DSPy beyond its public API.

:class:`~toolkit.extraction.BatchJSONAdapter` overrides DSPy's private ``_prepare_response_format``
to send each batch its own schema (ids and types as enums, bounded lists), and the extraction module
reads each call's tokens with ``dspy.utils.usage_tracker.track_usage``. A DSPy release that renames
the hook, stops calling it or changes the tracker would silently send DSPy's own schema, or lose the
usage: these tests fail loudly instead. The tested range is pinned in pyproject.toml.
"""

from __future__ import annotations

import inspect
from typing import Any

import dspy
import pytest

from toolkit.core import Document
from toolkit.execution._vclock import run_virtual
from toolkit.extraction import BatchExtractor, BatchJSONAdapter, ExtractionSettings, response_schema
from toolkit.lm import resolve_lm, schema_of

DOCS = [
    Document("d1", "Cystic fibrosis is caused by mutations in CFTR."),
    Document("d2", "Patients with Huntington disease were treated with tetrabenazine."),
]
SETTINGS = ExtractionSettings.preset("biomedical")


def test_the_adapter_extends_a_dspy_class_that_still_has_the_hook() -> None:
    hook = "_prepare_response_format"
    base = next(c for c in BatchJSONAdapter.__mro__[1:] if hook in vars(c))
    assert issubclass(BatchJSONAdapter, dspy.JSONAdapter)
    assert base is dspy.JSONAdapter, f"DSPy moved {hook} from JSONAdapter to {base.__qualname__}"
    assert list(inspect.signature(getattr(base, hook)).parameters) == ["self", "lm", "lm_kwargs", "signature"], (
        f"DSPy changed the signature of JSONAdapter.{hook}: check BatchJSONAdapter's override")
    assert hook in vars(BatchJSONAdapter)
    # DSPy calls the hook from both call paths, before the LM is called.
    for method in ("__call__", "acall"):
        assert hook in inspect.getsource(getattr(dspy.JSONAdapter, method)), (
            f"dspy.JSONAdapter.{method} no longer calls {hook}: the per-batch schema would be replaced")


def test_the_usage_tracker_still_has_what_the_module_uses() -> None:
    from dspy.utils import usage_tracker

    assert callable(usage_tracker.track_usage)
    with usage_tracker.track_usage() as tracker:  # the module enters and leaves it around each call
        tracker.add_usage("emulated:x", {"prompt_tokens": 7, "completion_tokens": 3})
    totals = tracker.get_total_tokens()
    assert isinstance(totals, dict) and totals["emulated:x"]["prompt_tokens"] == 7
    assert totals["emulated:x"]["completion_tokens"] == 3


@pytest.mark.parametrize("path", ["sync", "async"])
def test_a_real_call_through_dspy_goes_through_the_override_with_the_batch_schema(
        path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A call through DSPy's machinery (Predict, the adapter, dspy.LM) on the emulated provider: the
    override is called and the provider receives the batch's own schema, and the usage comes back."""
    calls: list[dict[str, Any]] = []
    original = BatchJSONAdapter._prepare_response_format

    def recording(self: BatchJSONAdapter, lm: Any, lm_kwargs: dict[str, Any], signature: Any) -> None:
        calls.append(dict(lm_kwargs))
        original(self, lm, lm_kwargs, signature)

    monkeypatch.setattr(BatchJSONAdapter, "_prepare_response_format", recording)
    resolved = resolve_lm("emulated:hosted-api")
    received: list[dict[str, Any] | None] = []
    engine = resolved.engine
    complete = engine.complete

    async def spying(request: Any) -> Any:
        received.append(schema_of(request.config.response_format))
        return await complete(request)

    monkeypatch.setattr(engine, "complete", spying)
    extractor = BatchExtractor(SETTINGS, "packed")

    async def run_async() -> dspy.Prediction:
        return await extractor.acall(DOCS)

    with dspy.context(lm=resolved.lm):
        if path == "async":
            prediction = run_virtual(run_async())
        else:  # the sync face runs the same engine on a private loop
            prediction = extractor(DOCS)
    expected = schema_of(response_schema([d.id for d in DOCS], SETTINGS))
    assert calls, "DSPy did not call BatchJSONAdapter._prepare_response_format"
    assert all("response_format" in kwargs for kwargs in calls)
    assert received and all(schema == expected for schema in received), "the provider got another schema"
    assert prediction.validated.missing_ids == [], "the emulated provider's answer was not read"
    assert [e.text for e in prediction.validated.entities["d2"]] == ["Huntington disease"]
    assert prediction.usage[0] and prediction.usage[1], "no usage from dspy.utils.usage_tracker"
