"""jobs"""

from toolkit.jobs._pipeline import RunResult, RunSettings, run
from toolkit.jobs._report import configurations, cost_summary, counts_summary, limit_bound, outcome_summary
from toolkit.jobs._service import (
    ExtractionService,
    ServiceRun,
    default_policy,
    demos_for,
    extract_batch,
    get_batch_metrics,
    measure_reserves,
)

__all__ = [
    "ExtractionService", "RunResult", "RunSettings", "ServiceRun", "configurations", "limit_bound", "cost_summary",
    "counts_summary", "default_policy", "demos_for", "extract_batch", "get_batch_metrics", "measure_reserves",
    "outcome_summary", "run",
]
