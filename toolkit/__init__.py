"""batchx-toolkit: batched LLM entity extraction with measured speedup and quality."""

from toolkit.documents import Document, Entity, Relationship
from toolkit.executor import (
    DocumentOutcome,
    ExecutionReport,
    Executor,
    RunStopped,
    extract_batch_with_retry,
)
from toolkit.metrics import AttemptRecord, BatchMetricsTracker, RunMetrics
from toolkit.models import (
    Baseline,
    BatchExtractionResult,
    BatchStatus,
    DocumentBatch,
    ProcessingMetrics,
)
from toolkit.policies import (
    BreakerPolicy,
    ConcurrencyPolicy,
    ExecutionPolicy,
    RateLimitPolicy,
    RetryPolicy,
    SplitPolicy,
)
from toolkit.packer import BatchQueue, Packer, PackingSettings, PackResult, pack
from toolkit.tokens import count_tokens, estimate_tokens, get_counter, register_tokenizer

__all__ = [
    "AttemptRecord",
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


def run(corpus: str = "pubmed-sample", **kwargs):  # -> toolkit.pipeline.RunResult
    """The main job from Python: see :func:`toolkit.pipeline.run` (imported lazily: it loads DSPy)."""
    from toolkit.pipeline import run as _run

    return _run(corpus, **kwargs)


def extract_batch(documents, token_budget: int = 8192, lm=None):  # -> BatchExtractionResult
    """The original API (see :func:`toolkit.service.extract_batch`)."""
    from toolkit.service import extract_batch as _extract_batch

    return _extract_batch(documents, token_budget, lm)


def get_batch_metrics():  # -> ProcessingMetrics
    """The original API (see :func:`toolkit.service.get_batch_metrics`)."""
    from toolkit.service import get_batch_metrics as _get_batch_metrics

    return _get_batch_metrics()
