"""batchx-toolkit: batched LLM entity extraction with measured speedup and quality."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

from toolkit.core import (
    Baseline,
    BatchExtractionResult,
    BatchStatus,
    Counts,
    Document,
    DocumentBatch,
    Entity,
    ProcessingMetrics,
    Relationship,
)
from toolkit.execution import (
    AttemptRecord,
    BatchMetricsTracker,
    BreakerPolicy,
    ConcurrencyPolicy,
    DocumentOutcome,
    ExecutionPolicy,
    ExecutionReport,
    Executor,
    RateLimitPolicy,
    RetryPolicy,
    RunMetrics,
    RunStopped,
    SplitPolicy,
    extract_batch_with_retry,
)
from toolkit.packing import (
    BatchQueue,
    Packer,
    PackingSettings,
    PackResult,
    count_tokens,
    estimate_tokens,
    get_counter,
    pack,
    register_tokenizer,
)

if TYPE_CHECKING:
    from toolkit.extraction import ExtractionSettings
    from toolkit.jobs import ExtractionService, RunResult, RunSettings, RunSummary, run
    from toolkit.lm import ResolvedLM, resolve_lm
    from toolkit.store import open_store

__all__ = [
    "AttemptRecord",
    "Counts",
    "ExtractionService",
    "ExtractionSettings",
    "ResolvedLM",
    "RunResult",
    "RunSettings",
    "RunSummary",
    "open_store",
    "resolve_lm",
    "BreakerPolicy",
    "ConcurrencyPolicy",
    "DocumentOutcome",
    "ExecutionPolicy",
    "ExecutionReport",
    "Executor",
    "RateLimitPolicy",
    "RetryPolicy",
    "RunStopped",
    "SplitPolicy",
    "extract_batch_with_retry",
    "Baseline",
    "BatchExtractionResult",
    "BatchMetricsTracker",
    "BatchQueue",
    "BatchStatus",
    "Document",
    "DocumentBatch",
    "Entity",
    "PackResult",
    "Packer",
    "PackingSettings",
    "ProcessingMetrics",
    "Relationship",
    "RunMetrics",
    "count_tokens",
    "estimate_tokens",
    "get_counter",
    "pack",
    "register_tokenizer",
    "run",
    "extract_batch",
    "get_batch_metrics",
]
__version__ = "0.1.0"


# Exported lazily (PEP 562): importing them loads DSPy, which ``import toolkit`` does not. ``toolkit.run``
# is :func:`toolkit.jobs.run` itself: corpus in, entities in a store (every setting in ``RunSettings``).
_LAZY = {
    "run": "toolkit.jobs", "RunSettings": "toolkit.jobs", "RunResult": "toolkit.jobs", "RunSummary": "toolkit.jobs",
    "ExtractionService": "toolkit.jobs", "ExtractionSettings": "toolkit.extraction", "resolve_lm": "toolkit.lm",
    "open_store": "toolkit.store",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'toolkit' has no attribute {name!r}")


def extract_batch(documents: Sequence[Document], token_budget: int = 8192,
                  lm: str | ResolvedLM | None = None) -> BatchExtractionResult:
    """The original API (see :func:`toolkit.jobs._service.extract_batch`)."""
    from toolkit.jobs import extract_batch as _extract_batch

    return _extract_batch(documents, token_budget, lm)


def get_batch_metrics() -> ProcessingMetrics:
    """The original API (see :func:`toolkit.jobs._service.get_batch_metrics`)."""
    from toolkit.jobs import get_batch_metrics as _get_batch_metrics

    return _get_batch_metrics()
