"""execution"""

from toolkit.execution._calls import STOP_REQUESTED, learn_limits
from toolkit.execution._errors import (
    AuthenticationFailed,
    CallTimeout,
    ContextLengthExceeded,
    MalformedReply,
    RateLimited,
    RunFailed,
    ServerError,
    StopRequested,
    TruncatedReply,
    reply_headers,
)
from toolkit.execution._executor import (
    ExecutionReport,
    ExecutionStream,
    Executor,
    ProgressFn,
    RunStopped,
    call_counts,
    extract_batch_with_retry,
)
from toolkit.execution._limits import Admission, ConcurrencyGate, Gate, HeldSlot, Pacing, SlidingWindowLimiter, Window
from toolkit.execution._loophost import LoopHost
from toolkit.execution._metrics import AttemptRecord, BatchMetricsTracker, RunMetrics, max_in_window
from toolkit.execution._outcomes import DocumentOutcome
from toolkit.execution._policies import (
    BreakerPolicy,
    ConcurrencyPolicy,
    ExecutionPolicy,
    RateLimitPolicy,
    RetryPolicy,
    SplitPolicy,
    network_guard,
)
from toolkit.execution._ratelimits import RateFeed, format_duration

__all__ = [
    "Admission", "AttemptRecord", "AuthenticationFailed", "BatchMetricsTracker", "BreakerPolicy", "CallTimeout",
    "ConcurrencyGate", "ConcurrencyPolicy", "ContextLengthExceeded", "DocumentOutcome", "ExecutionPolicy",
    "ExecutionReport", "ExecutionStream", "Executor", "Gate", "HeldSlot", "LoopHost", "MalformedReply", "Pacing",
    "ProgressFn", "RateFeed",
    "RateLimitPolicy", "RateLimited", "RetryPolicy", "RunFailed", "RunMetrics", "RunStopped", "STOP_REQUESTED",
    "ServerError", "SlidingWindowLimiter", "SplitPolicy", "StopRequested", "TruncatedReply", "call_counts",
    "extract_batch_with_retry", "format_duration", "learn_limits", "max_in_window", "network_guard", "reply_headers",
    "Window",
]
