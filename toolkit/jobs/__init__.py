"""jobs"""

import importlib
from typing import TYPE_CHECKING

from toolkit.execution import Pacing
from toolkit.jobs._context import Progress, RunContext
from toolkit.jobs._report import (
    cost_summary,
    counts_summary,
    limit_bound,
    lost_documents,
    outcome_summary,
)
from toolkit.jobs._runners import Chunk, ChunkResult, ChunkService, LocalRunner, Runner, RunnerFigures
from toolkit.jobs._settings import DEFAULT_CORPUS, RunSettings
from toolkit.jobs._summary import RunSummary

if TYPE_CHECKING:
    from toolkit.jobs._pipeline import RunResult, open_runner, run
    from toolkit.jobs._service import (
        ExtractionService,
        ServiceRun,
        default_policy,
        demos_for,
        extract_batch,
        extractor_for,
        get_batch_metrics,
        measure_reserves,
    )

_LAZY = {  # names whose modules import DSPy: loaded when first used (the settings and the CLI's defaults are not)
    **dict.fromkeys(["RunResult", "open_runner", "run"], "toolkit.jobs._pipeline"),
    **dict.fromkeys(["ExtractionService", "ServiceRun", "default_policy", "demos_for", "extract_batch",
                     "extractor_for", "get_batch_metrics", "measure_reserves"], "toolkit.jobs._service"),
}

__all__ = [
    "Chunk", "ChunkResult", "ChunkService", "DEFAULT_CORPUS", "ExtractionService", "LocalRunner", "Pacing", "Progress",
    "RunContext", "RunResult", "RunSettings", "RunSummary", "Runner", "RunnerFigures", "ServiceRun",
    "cost_summary", "counts_summary", "default_policy", "demos_for", "extract_batch", "extractor_for",
    "get_batch_metrics", "limit_bound", "lost_documents", "measure_reserves", "open_runner", "outcome_summary", "run",
]


def __getattr__(name: str) -> object:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'toolkit.jobs' has no attribute {name!r}")
