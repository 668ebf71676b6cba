"""batchx-toolkit: batched LLM entity extraction with measured speedup and quality."""

from __future__ import annotations

import dataclasses
import importlib
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
    from toolkit.jobs import ExtractionService, RunResult, RunSettings
    from toolkit.lm import ResolvedLM, resolve_lm
    from toolkit.store import Store, open_store

__all__ = [
    "AttemptRecord",
    "Counts",
    "ExtractionService",
    "ExtractionSettings",
    "ResolvedLM",
    "RunResult",
    "RunSettings",
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


# Exported lazily (PEP 562): importing them loads DSPy, which ``import toolkit`` does not.
_LAZY = {
    "RunSettings": "toolkit.jobs._pipeline", "RunResult": "toolkit.jobs._pipeline", "ExtractionSettings": "toolkit.extraction",
    "ExtractionService": "toolkit.jobs._service", "resolve_lm": "toolkit.lm", "open_store": "toolkit.store",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'toolkit' has no attribute {name!r}")


def run(corpus: str | Path = "pubmed-sample", *, lm: str | ResolvedLM = "local", store: str | Store | None = None,
        settings: RunSettings | None = None, run_name: str | None = None, resume: bool = False,
        limit: int | None = None, api_base: str | None = None, fmt: str | None = None,
        progress: bool | Callable[[dict[str, Any]], None] | None = None, stop: threading.Event | None = None,
        engine: str = "local", workers: int = 2, ray_address: str | None = None, mode: str | None = None,
        batch: Any = None) -> RunResult:
    """The main job from Python (see :func:`toolkit.jobs._pipeline.run`): extract ``corpus`` with ``lm``
    into ``store`` (default ``sqlite:///batchx.db``) under ``settings``, as run ``run_name``; once
    ``stop`` is set (from another thread) the run stops, resumable; ``engine="ray"`` runs it on
    ``workers`` Ray workers (``ray_address``: an existing cluster); ``mode="batch-api"``: through the
    provider's batch API (``batch``: :class:`toolkit.jobs.batchapi.BatchApiSettings`)."""
    from toolkit.jobs import RunSettings, run as _run

    if mode is not None:
        settings = dataclasses.replace(settings or RunSettings(), mode=mode)
    return _run(corpus, lm=lm, store=store, settings=settings, run_name=run_name, resume=resume, limit=limit,
                api_base=api_base, fmt=fmt, progress=progress, stop=stop, engine=engine, workers=workers,
                ray_address=ray_address, batch=batch)


def extract_batch(documents: Sequence[Document], token_budget: int = 8192,
                  lm: str | ResolvedLM | None = None) -> BatchExtractionResult:
    """The original API (see :func:`toolkit.jobs._service.extract_batch`)."""
    from toolkit.jobs import extract_batch as _extract_batch

    return _extract_batch(documents, token_budget, lm)


def get_batch_metrics() -> ProcessingMetrics:
    """The original API (see :func:`toolkit.jobs._service.get_batch_metrics`)."""
    from toolkit.jobs import get_batch_metrics as _get_batch_metrics

    return _get_batch_metrics()
