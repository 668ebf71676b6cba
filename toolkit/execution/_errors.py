"""Error classes the executor acts on, and :func:`classify` for exceptions raised by providers.

Three kinds, each handled one way:

* **retryable** (:class:`TransientError`): timeouts, connection errors, 429, 5xx, unparseable or
  truncated replies. Retried with backoff; a 429's ``Retry-After`` is honoured.
* **split now** (:class:`Unsendable`, :class:`ContextLengthExceeded`): the batch is too big for the
  model, or cannot be encoded; it is split at once, never retried whole, and a single document
  that still cannot be sent fails with the reason.
* **fatal** (:class:`FatalError`): 400/401/403/404, a 429 or 402 that says the quota or credit is
  used up, and invalid configuration. The run stops at once; documents not yet done stay pending
  (resumable), none is marked failed for it.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

from toolkit.execution._ratelimits import RateInfo, parse_rate_headers, retry_after_from_message


class ExtractionError(Exception):
    """Base class; ``kind`` is the short label recorded in metrics."""

    kind = "error"


class TransientError(ExtractionError):
    kind = "transient"
    provider_fault = True  # counts toward the circuit breaker


class RateLimited(TransientError):
    """429. ``retry_after`` (seconds) is honoured when the provider says it; ``rate_info``: what the
    reply's headers said about the account (limits, remaining, resets), for the pacer to adopt."""

    kind = "rate_limited"
    provider_fault = False  # the provider is up, we are too fast: adapt, do not trip the breaker

    def __init__(self, message: str = "rate limited (429)", retry_after: float | None = None,
                 rate_info: RateInfo | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.rate_info = rate_info


class Overloaded(TransientError):
    """503/529: the provider asks clients to back off (concurrency decreases, like on 429)."""

    kind = "overloaded"


class ServerError(TransientError):
    kind = "server_error"


class CallTimeout(TransientError):
    kind = "timeout"


class ConnectionFailed(TransientError):
    kind = "connection"


class MalformedReply(TransientError):
    """The reply could not be parsed (after repair)."""

    kind = "malformed"
    provider_fault = False


class TruncatedReply(MalformedReply):
    """The reply stopped mid-way (output limit reached)."""

    kind = "truncated"


class Unsendable(ExtractionError):
    """The batch as it is cannot be sent (retrying it whole is useless): it is split at once, and a
    single document that still cannot be sent fails with this reason."""

    kind = "unsendable"


class ContextLengthExceeded(Unsendable):
    kind = "context_length"


class FatalError(ExtractionError):
    kind = "fatal"


class AuthenticationFailed(FatalError):
    kind = "auth"


class BadRequest(FatalError):
    kind = "bad_request"


class NotFound(FatalError):
    kind = "not_found"


class InvalidConfiguration(FatalError, ValueError):
    kind = "config"


class QuotaExhausted(FatalError):
    """A 429 that says the account's quota or credit is used up: no wait will cure it."""

    kind = "quota"


class StopRequested(Exception):
    """The user asked the run to stop (a notebook's Stop button); it stops as Ctrl-C stops it."""


class RunFailed(RuntimeError):
    """The main job ended by an error after it started (its run is marked failed in the store)."""


_BY_STATUS: dict[int, type[ExtractionError]] = {
    400: BadRequest, 401: AuthenticationFailed, 403: AuthenticationFailed, 404: NotFound,
    408: CallTimeout, 429: RateLimited, 503: Overloaded, 529: Overloaded,
}
_CONTEXT_HINTS = ("context length", "context_length", "maximum context", "context window", "too many tokens")
_QUOTA_HINTS = ("insufficient_quota", "exceeded your current quota", "quota exceeded", "quota has been exhausted",
                "billing", "credit balance", "out of credits", "payment required", "resource_exhausted: quota")


_DSPY_NAMES: dict[str, type[ExtractionError]] = {  # dspy.utils.exceptions, by class name
    "LMAuthError": AuthenticationFailed, "LMBillingError": QuotaExhausted,
    "LMRateLimitError": RateLimited, "ContextWindowExceededError": ContextLengthExceeded,
    "LMUnsupportedModelError": NotFound, "LMInvalidRequestError": BadRequest,
    "LMConfigurationError": InvalidConfiguration, "LMNotConfiguredError": InvalidConfiguration,
    "LMTimeoutError": CallTimeout, "LMServerError": ServerError, "LMTransportError": ConnectionFailed,
    "AdapterParseError": MalformedReply,
}


def reply_headers(exc: BaseException) -> list[tuple[object, object]]:
    """The reply's headers an exception carries, from it and its causes: DSPy's (lm15's)
    ``rate_limit_headers``, ``response.headers`` (LiteLLM, httpx, openai), ``headers``."""
    pairs: list[tuple[object, object]] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        response = getattr(current, "response", None)
        for headers in (getattr(current, "rate_limit_headers", None), getattr(response, "headers", None),
                        getattr(current, "headers", None)):
            items = getattr(headers, "items", None)
            try:
                pairs.extend(items() if items is not None else headers or ())
            except Exception:  # noqa: BLE001 - not headers: nothing to read there
                continue
        current = current.__cause__ or current.__context__
    return pairs


def rate_limited(exc: BaseException, message: str) -> RateLimited:
    """A :class:`RateLimited` for ``exc`` with the wait the provider asked for, from the first
    source that says it: the exception's own ``retry_after`` (DSPy reads the retry headers), the
    reply's headers (``retry-after-ms``, ``retry-after``), the message ("try again in 1.234s");
    and what the reply's headers said about the account."""
    info = parse_rate_headers(reply_headers(exc))
    wait = _seconds(getattr(exc, "retry_after", None))
    if wait is None and info is not None:
        wait = info.retry_after
    if wait is None:
        wait = retry_after_from_message(str(exc))
    if info is not None and info.retry_after != wait:
        info = replace(info, retry_after=wait)
    return RateLimited(message, retry_after=wait, rate_info=info)


def _seconds(value: Any) -> float | None:
    try:
        seconds = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return seconds if 0 <= seconds < float("inf") else None


def _status(exc: BaseException) -> int | None:
    """The HTTP status an exception carries: ``status_code`` (litellm, openai, httpx), DSPy's
    ``status``, or its response's."""
    for value in (getattr(exc, "status_code", None), getattr(exc, "status", None),
                  getattr(getattr(exc, "response", None), "status_code", None)):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def classify(exc: BaseException) -> ExtractionError:
    """Map any exception to one of the classes above (an :class:`ExtractionError` is returned as is).

    Recognises builtin timeouts and connection errors, and provider exceptions that carry an HTTP
    ``status_code`` (litellm, openai, httpx). Unknown exceptions are treated as transient server
    errors: retried, then split, bounded by the call budget.
    """
    if isinstance(exc, ExtractionError):
        return exc
    cause = exc.__cause__  # DSPy wraps an engine's exception (LMUnexpectedError from ...)
    while cause is not None:
        if isinstance(cause, ExtractionError):
            return cause
        cause = cause.__cause__
    message = f"{type(exc).__name__}: {exc}"
    name = type(exc).__name__.lower()
    if "contextwindow" in name or any(h in str(exc).lower() for h in _CONTEXT_HINTS):
        return ContextLengthExceeded(message)
    status = _status(exc)
    if status in (402, 429) or "ratelimit" in name or "billing" in name:
        if status == 402 or any(h in str(exc).lower() for h in _QUOTA_HINTS):
            return QuotaExhausted(message)
    if isinstance(exc, UnicodeError):  # a document's text cannot be encoded into the request
        return Unsendable(message)
    dspy_kind = _DSPY_NAMES.get(type(exc).__name__)
    lowered = str(exc).lower()
    if dspy_kind is ConnectionFailed and "timed out" in lowered:  # DSPy reports a read timeout as a transport error
        return CallTimeout(message)
    if status in (None, 500) and "connection error" in lowered:  # LiteLLM: a dropped connection is a 500
        return ConnectionFailed(message)
    if dspy_kind is not None and not isinstance(status, int):
        return rate_limited(exc, message) if dspy_kind is RateLimited else dspy_kind(message)
    if isinstance(status, int):
        if status == 429:
            return rate_limited(exc, message)
        if status in _BY_STATUS:
            return _BY_STATUS[status](message)
        if status >= 500:
            return ServerError(message)
        if 400 <= status < 500:
            return BadRequest(message)
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)) or "timeout" in name:
        return CallTimeout(message)
    if isinstance(exc, ConnectionError) or "connection" in name:
        return ConnectionFailed(message)
    if isinstance(exc, (ValueError, TypeError)) and "json" in message.lower():
        return MalformedReply(message)
    return ServerError(message)
