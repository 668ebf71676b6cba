"""core"""

from toolkit.core._batches import (
    Baseline,
    BatchExtractionResult,
    BatchStatus,
    DocumentBatch,
    ProcessingMetrics,
    check_token_count,
)
from toolkit.core._counts import FIELDS, Counts
from toolkit.core._documents import Document, Dropped, Entity, Relationship, normalise
from toolkit.core._faults import Faults
from toolkit.core._paths import DATA_DIR, PACKAGE_DIR, RESULTS_DIR, cache_dir, shared_dir
from toolkit.core._pricing import Prices, resolve_prices
from toolkit.core._pypi import CHUNK, FetchError, download_wheels, sha256_file, wheel_member
from toolkit.core._redact import redact, split_userinfo
from toolkit.core._types import (
    DEMO_CHOICES,
    LAYOUTS,
    MODES,
    RUNNERS,
    STRATEGIES,
    DemoChoice,
    Layout,
    Mode,
    RunnerName,
    Strategy,
)

__all__ = [
    "Baseline", "BatchExtractionResult", "BatchStatus", "CHUNK", "Counts", "DATA_DIR", "DEMO_CHOICES", "DemoChoice",
    "Document", "DocumentBatch", "Dropped", "Entity", "FIELDS", "Faults", "FetchError", "LAYOUTS", "Layout", "MODES",
    "Mode", "PACKAGE_DIR",
    "Prices", "ProcessingMetrics", "RESULTS_DIR", "RUNNERS", "Relationship", "RunnerName", "STRATEGIES", "Strategy",
    "cache_dir", "check_token_count", "download_wheels", "normalise", "redact", "resolve_prices", "sha256_file",
    "shared_dir", "split_userinfo", "wheel_member",
]
