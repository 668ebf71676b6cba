"""Every provider reply's headers to a :class:`~toolkit.execution._ratelimits.RateFeed`, on the client stack
that does the HTTP, for the two ways DSPy sends a call:

* its own client (lm15, for ``openai/``, ``anthropic/``, ``ollama_chat/``, ...): lm15 takes a
  caller's transport (``RouterConfig(transport=...)``; "borrowed transports stay caller-owned"),
  so :class:`PublishingTransport` and :class:`PublishingAsyncTransport` wrap lm15's own stdlib
  transports and publish the headers of each reply (a 429's too) as it arrives;
* LiteLLM (``together_ai/``, ``mistral/``, ...): LiteLLM keeps a reply's headers in
  ``_hidden_params["additional_headers"]`` and a failure's on its exception; one
  ``ReplyLogger`` (a LiteLLM ``CustomLogger``, :func:`reply_logger_class`) finds the feed by a key in the call's
  ``metadata`` (:func:`litellm_metadata`). LiteLLM runs async callbacks from a background worker,
  a few milliseconds after the reply.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import uuid
import weakref
from typing import Any

from toolkit.execution import RateFeed, reply_headers

METADATA_KEY = "batchx_rate_feed"
_FEEDS: weakref.WeakValueDictionary[str, RateFeed] = weakref.WeakValueDictionary()
_REGISTER = threading.Lock()


class PublishingTransport:
    """An lm15 sync transport (lm15's own ``StdlibTransport``) that publishes each reply's headers."""

    def __init__(self, feed: RateFeed, **options: Any) -> None:
        from dspy._vendor.lm15.transports import StdlibTransport

        self.feed = feed
        self.inner = StdlibTransport(**options)

    def stream(self, request: Any) -> Any:
        response = self.inner.stream(request)
        self.feed.publish_headers(response.headers)
        return response

    def close(self) -> None:
        self.inner.close()


class PublishingAsyncTransport:
    """The async twin: lm15's ``StdlibAsyncTransport``, one per event loop (its pool belongs to the
    loop that first used it, and a run may use more than one loop)."""

    def __init__(self, feed: RateFeed, **options: Any) -> None:
        self.feed = feed
        self.options = options
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def _inner(self) -> Any:
        from dspy._vendor.lm15.transports import StdlibAsyncTransport

        loop = asyncio.get_running_loop()
        with self._lock:
            if loop not in self._by_loop:
                self._by_loop[loop] = StdlibAsyncTransport(**self.options)
            return self._by_loop[loop]

    def stream(self, request: Any) -> _Published:
        return _Published(self._inner().stream(request), self.feed)

    async def aclose(self) -> None:
        with self._lock:
            inner = self._by_loop.pop(asyncio.get_running_loop(), None)
        if inner is not None:
            await inner.aclose()


class _Published:
    """``async with`` an lm15 async stream, publishing the reply's headers once they arrive."""

    def __init__(self, inner: Any, feed: RateFeed) -> None:
        self.inner = inner
        self.feed = feed

    async def __aenter__(self) -> Any:
        response = await self.inner.__aenter__()
        self.feed.publish_headers(response.headers)
        return response

    async def __aexit__(self, *exc: Any) -> Any:
        return await self.inner.__aexit__(*exc)


def litellm_metadata(feed: RateFeed) -> dict[str, str]:
    """``metadata`` for a ``dspy.LM`` whose calls go through LiteLLM: ``ReplyLogger`` publishes
    their replies' headers to ``feed`` (registered once in ``litellm.callbacks``)."""
    import litellm

    key = uuid.uuid4().hex
    with _REGISTER:
        _FEEDS[key] = feed
        logger = reply_logger_class()
        if not any(isinstance(c, logger) for c in litellm.callbacks):
            litellm.callbacks.append(logger())
    return {METADATA_KEY: key}


def _feed_of(kwargs: dict[str, Any]) -> RateFeed | None:
    metadata = (kwargs.get("litellm_params") or {}).get("metadata") or {}
    key = metadata.get(METADATA_KEY) if isinstance(metadata, dict) else None
    return _FEEDS.get(key) if isinstance(key, str) else None


def _hidden_headers(response: Any) -> Any:
    return (getattr(response, "_hidden_params", None) or {}).get("additional_headers")


@functools.cache
def reply_logger_class() -> type:
    """:class:`ReplyLogger`'s class, made on first use (LiteLLM is imported only when a call needs it)."""
    from litellm.integrations.custom_logger import CustomLogger

    class ReplyLogger(CustomLogger):
        """LiteLLM's callback: each reply's headers (success or failure) to its call's feed."""

        def log_success_event(self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any) -> None:
            feed = _feed_of(kwargs)
            if feed is not None:
                feed.publish_headers(_hidden_headers(response_obj))

        def log_failure_event(self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any) -> None:
            feed = _feed_of(kwargs)
            exception = kwargs.get("exception")
            if feed is not None and isinstance(exception, BaseException):
                feed.publish_headers(reply_headers(exception))

        async def async_log_success_event(self, kwargs: dict[str, Any], response_obj: Any, start_time: Any,
                                          end_time: Any) -> None:
            self.log_success_event(kwargs, response_obj, start_time, end_time)

        async def async_log_failure_event(self, kwargs: dict[str, Any], response_obj: Any, start_time: Any,
                                          end_time: Any) -> None:
            self.log_failure_event(kwargs, response_obj, start_time, end_time)

    return ReplyLogger
