"""What a provider's replies say about the account's rate limits, and a feed that carries it.

:func:`parse_rate_headers` reads one reply's headers into a :class:`RateInfo`:

* OpenAI (and servers that copy it): ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``,
  the reset a duration until the window is fully replenished (``1s``, ``6m0s``, ``20ms``,
  ``1h2m3.5s``);
* Anthropic: ``anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,remaining,reset}``,
  the reset an RFC 3339 time, turned into seconds from the reply;
* ``retry-after-ms``, ``x-ms-retry-after-ms`` (milliseconds) and ``retry-after`` (seconds or an
  HTTP date), in that order.

Headers may come as a mapping or as (name, value) pairs, in any case, also with LiteLLM's
``llm_provider-`` prefix; a value that cannot be read is ignored, and the parsers never raise.
:func:`retry_after_from_message` reads a 429 message's "Please try again in 1.234s".
:class:`RateFeed` is where a backend publishes each reply's :class:`RateInfo` for a pacer.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

_log = logging.getLogger(__name__)

KINDS = ("requests", "tokens", "input_tokens", "output_tokens")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ns": 1e-9}
_PART = r"(\d+(?:\.\d*)?|\.\d+)(h|ms|m|s|us|µs|μs|ns)"
_DURATION = re.compile(f"(?:{_PART})+")
_NUMBER = re.compile(r"\+?(\d+(?:\.\d*)?|\.\d+)")
_EPOCH = 1e9  # a bare reset above this many seconds is a Unix time, not a duration
_MESSAGE = (re.compile(r"try again in\s+((?:\d+(?:\.\d*)?(?:h|ms|m|s|us|µs|μs|ns))+)", re.IGNORECASE),
            re.compile(r"retry after\s+(\d+(?:\.\d+)?)\s*(?:seconds?|s)\b", re.IGNORECASE))
_PREFIX = "llm_provider-"  # LiteLLM's copy of every provider header


@dataclass(frozen=True)
class Budget:
    """One limit of the account, as one reply saw it (None: not said)."""

    limit: int | None = None  # per window
    remaining: int | None = None  # left in the window
    reset: float | None = None  # seconds from the reply until the window is fully replenished


@dataclass(frozen=True)
class RateInfo:
    """What one reply said about the account: its limits, what is left, when to come back."""

    source: str  # "openai" | "anthropic" (their headers) | "retry-after" (a retry header alone)
    requests: Budget = field(default_factory=Budget)
    tokens: Budget = field(default_factory=Budget)
    input_tokens: Budget = field(default_factory=Budget)
    output_tokens: Budget = field(default_factory=Budget)
    retry_after: float | None = None  # seconds to wait before the next call, when the reply said
    received: float | None = None  # time.monotonic() when the reply arrived (set by RateFeed)
    processing: float | None = None  # seconds the provider spent on the call (OpenAI's openai-processing-ms)


def parse_duration(text: object) -> float | None:
    """Seconds in a Go-style duration (``1s``, ``6m0s``, ``20ms``, ``1h2m3.5s``) or a bare number
    of seconds; None when ``text`` is not one."""
    if not isinstance(text, str) or len(text) > 64:
        return None
    text = text.strip()
    if _NUMBER.fullmatch(text):
        return _finite(float(text))
    if not _DURATION.fullmatch(text):
        return None
    return _finite(sum(float(n) * _UNIT_SECONDS[u] for n, u in re.findall(_PART, text)))


def format_duration(seconds: float) -> str:
    """``seconds`` as OpenAI writes a reset (``6m0s``, ``1.5s``, ``20ms``); read back by :func:`parse_duration`."""
    if seconds < 1:
        return f"{_plain(seconds * 1000)}ms"
    minutes, rest = divmod(seconds, 60.0)
    hours, minutes = divmod(int(minutes), 60)
    return (f"{hours}h" if hours else "") + (f"{minutes}m" if hours or minutes else "") + f"{_plain(rest)}s"


def parse_rate_headers(headers: object, now: float | None = None) -> RateInfo | None:
    """The :class:`RateInfo` in one reply's headers, or None when they say nothing about limits.
    ``now``: the reply's wall-clock time (``time.time()``), from which Anthropic's reset times and
    an HTTP-date ``retry-after`` are measured."""
    values = _header_values(headers)
    now = time.time() if now is None else now
    openai = {kind: Budget(_count(values.get(f"x-ratelimit-limit-{kind}")),
                           _count(values.get(f"x-ratelimit-remaining-{kind}")),
                           _reset(values.get(f"x-ratelimit-reset-{kind}"), now))
              for kind in ("requests", "tokens")}
    anthropic = {kind: Budget(_count(values.get(f"anthropic-ratelimit-{name}-limit")),
                              _count(values.get(f"anthropic-ratelimit-{name}-remaining")),
                              _seconds_until(values.get(f"anthropic-ratelimit-{name}-reset"), now))
                 for kind, name in zip(KINDS, ("requests", "tokens", "input-tokens", "output-tokens"))}
    retry = _retry_after(values, now)
    processing = _count(values.get("openai-processing-ms"))
    empty = Budget()
    if any(b != empty for b in anthropic.values()):
        return RateInfo("anthropic", anthropic["requests"], anthropic["tokens"], anthropic["input_tokens"],
                        anthropic["output_tokens"], retry_after=retry)
    if any(b != empty for b in openai.values()):
        return RateInfo("openai", openai["requests"], openai["tokens"], retry_after=retry,
                        processing=processing / 1000 if processing is not None else None)
    return RateInfo("retry-after", retry_after=retry) if retry is not None else None


def retry_after_from_message(text: object) -> float | None:
    """Seconds a 429's message asks to wait ("Please try again in 1.234s", "in 20ms", "in 6m0s";
    Azure's "retry after 20 seconds"), or None."""
    if not isinstance(text, str):
        return None
    for pattern in _MESSAGE:
        found = pattern.search(text[:4000])
        if found:
            return parse_duration(found.group(1))
    return None


class RateFeed:
    """Thread-safe: a backend publishes each reply's :class:`RateInfo`; a pacer subscribes (its
    callback runs in the thread that received the reply, and must be quick) or reads the latest."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latest: RateInfo | None = None
        self._subscribers: list[Callable[[RateInfo], None]] = []

    def publish(self, info: RateInfo) -> None:
        with self._lock:
            self._latest = info
            subscribers = list(self._subscribers)
        for callback in subscribers:
            try:
                callback(info)
            except Exception:  # noqa: BLE001 - a subscriber's bug must not lose the reply it was told about
                _log.exception("a rate-limit subscriber failed on %r", info)

    def publish_headers(self, headers: object) -> RateInfo | None:
        """Publish what ``headers`` (a reply's, just received) say, stamped with its arrival; nothing
        when they say nothing about limits."""
        info = parse_rate_headers(headers)
        if info is not None:
            info = replace(info, received=time.monotonic())
            self.publish(info)
        return info

    def latest(self) -> RateInfo | None:
        with self._lock:
            return self._latest

    def subscribe(self, callback: Callable[[RateInfo], None]) -> Callable[[], None]:
        """Call ``callback`` with every published :class:`RateInfo`; returns the unsubscribe function."""
        with self._lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)

        return unsubscribe


def _header_values(headers: object) -> dict[str, str]:
    """Lower-cased name -> first value, LiteLLM's ``llm_provider-`` copies included; garbage skipped."""
    out: dict[str, str] = {}
    try:
        items = getattr(headers, "items", None)
        pairs = list(items()) if items is not None else list(headers or ()) if isinstance(headers, Iterable) else []
        for pair in pairs:
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                continue
            name, value = pair
            if isinstance(value, (tuple, list)):  # lm15's snapshot: name -> every value sent
                value = value[0] if value else None
            name, value = (x.decode("latin-1") if isinstance(x, bytes) else x for x in (name, value))
            if isinstance(name, str) and isinstance(value, str):
                name = name.strip().lower()
                out.setdefault(name.removeprefix(_PREFIX), value.strip())
    except Exception:  # noqa: BLE001 - not headers at all: what was read so far stands
        pass
    return out


def _plain(number: float) -> str:
    """``number`` with up to nine decimals and no exponent (``1.5``, ``0``, ``0.000001``)."""
    return f"{number:.9f}".rstrip("0").rstrip(".")


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) and value >= 0 else None


def _count(text: str | None) -> int | None:
    if text is None or not _NUMBER.fullmatch(text):
        return None
    value = _finite(float(text))
    return int(value) if value is not None and value < 2 ** 63 else None


def _reset(text: str | None, now: float) -> float | None:
    seconds = parse_duration(text)
    if seconds is not None and seconds > _EPOCH:  # a Unix time, as some servers send
        return max(0.0, seconds - now)
    return seconds


def _seconds_until(text: str | None, now: float) -> float | None:
    """Seconds from ``now`` to an RFC 3339 time (a number of seconds is taken as is)."""
    if text is None:
        return None
    if _NUMBER.fullmatch(text):
        return _reset(text, now)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    return _since(when, now)


def _retry_after(values: dict[str, str], now: float) -> float | None:
    for name in ("retry-after-ms", "x-ms-retry-after-ms"):
        text = values.get(name)
        if text is not None and _NUMBER.fullmatch(text):
            seconds = _finite(float(text) / 1000)
            if seconds is not None:
                return seconds
    text = values.get("retry-after")
    if text is None:
        return None
    if _NUMBER.fullmatch(text):
        return _finite(float(text))
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return _since(when, now) if when is not None else None


def _since(when: datetime, now: float) -> float | None:
    """Seconds from ``now`` (a Unix time) to ``when`` (UTC when it says no zone), at least 0."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    try:
        return _finite(max(0.0, when.timestamp() - now))
    except (OverflowError, OSError, ValueError):
        return None
