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
]
__version__ = "0.1.0"
