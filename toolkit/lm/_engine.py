"""Shared pieces of the toolkit's DSPy engines (``complete(Request) -> Response``)."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
from collections.abc import Mapping
from typing import Any

from dspy.lm15 import Message, Response, TextPart, Usage, response_to_events

from toolkit.execution import RateFeed


def request_messages(request: Any) -> list[dict[str, str]]:
    """A DSPy (lm15) request as OpenAI-style chat messages."""
    messages = []
    if request.system is not None:
        system = request.system if isinstance(request.system, str) else "".join(p.text for p in request.system)
        messages.append({"role": "system", "content": system})
    messages.extend({"role": m.role, "content": m.text or ""} for m in request.messages)
    return messages


def schema_of(response_format: Any) -> dict[str, Any] | None:
    """The JSON schema inside an OpenAI-style ``response_format``, if any."""
    if not isinstance(response_format, dict):
        return None
    if "json_schema" in response_format:
        return response_format["json_schema"].get("schema")
    return response_format.get("schema")


def make_response(model: str, text: str, finish_reason: str, tokens_in: int, tokens_out: int,
                  cached: int | None = None) -> Response:
    """A reply as a provider gives it; ``cached``: of ``tokens_in``, those read from its prompt cache."""
    return Response(
        id=None,
        model=model,
        message=Message.assistant([TextPart(text)]),
        finish_reason="length" if finish_reason == "length" else "stop",
        usage=Usage(input_tokens=tokens_in, output_tokens=tokens_out, cache_read_tokens=cached),
    )


def token_count(value: Any) -> int:
    """``value`` as a count of tokens: a non-negative whole number, anything else 0."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0 or value == float("inf"):
        return 0
    return int(value)


def cached_tokens(usage: Any) -> int:
    """Prompt tokens a provider read from its prompt cache, from a usage dict as DSPy reports it
    (OpenAI's ``prompt_tokens_details.cached_tokens``, a dict or an object; Anthropic's
    ``cache_read_input_tokens``); whatever is not a count of tokens (a usage that is not a dict,
    details that are text, a count that is not a number) is 0."""
    if not isinstance(usage, Mapping):
        return 0
    details = usage.get("prompt_tokens_details")
    found = details.get("cached_tokens") if isinstance(details, Mapping) else getattr(details, "cached_tokens", None)
    return token_count(found) or token_count(usage.get("cache_read_input_tokens"))


class SyncEngineMixin:
    """``stream`` and ``close`` for an engine whose ``complete`` is synchronous."""

    supports_response_schema = True
    supported_params = frozenset({"response_format", "max_tokens", "temperature"})

    def stream(self, request: Any):
        return response_to_events(self.complete(request))  # type: ignore[attr-defined]

    def close(self) -> None:
        pass


class ThreadedAsyncEngine:
    """Async face of a synchronous engine: each call runs in a worker thread."""

    def __init__(self, sync: Any) -> None:
        self.sync = sync

    async def complete(self, request: Any) -> Response:
        return await asyncio.to_thread(self.sync.complete, request)

    async def stream(self, request: Any):
        for event in self.sync.stream(request):
            yield event

    async def aclose(self) -> None:
        pass



def server_request(request: Any) -> Any:
    """``request`` as an OpenAI-compatible server (``llama_cpp.server``, vLLM, ...) takes it: the
    JSON schema as ``{"type": "json_object", "schema": ...}`` and the output cap as ``max_tokens``,
    both sent verbatim in the body. DSPy alone sends neither: it drops the schema of a model it has
    no metadata for (and spells a schema ``json_schema``, which ``llama_cpp.server`` refuses), and
    caps output with ``max_completion_tokens``, which ``llama_cpp.server`` ignores (a reply could
    run to the end of its context)."""
    config = request.config
    body = dict(config.extensions or {})
    if config.response_format is not None:
        schema = schema_of(config.response_format)
        body["response_format"] = {"type": "json_object", **({"schema": schema} if schema else {})}
    if config.max_tokens is not None:
        body["max_tokens"] = config.max_tokens
    config = dataclasses.replace(config, response_format=None, max_tokens=None, extensions=body or None)
    return dataclasses.replace(request, config=config)


def native_provider(model: str) -> str | None:
    """The provider DSPy's own client (lm15) sends ``model`` to, decided offline as DSPy decides
    it (``openai-chat``, ``anthropic``, ``ollama``, ...); None: DSPy sends it through LiteLLM."""
    from dspy.clients.engines import LM15Engine
    from dspy.lm15 import RouterConfig, UnknownModelError, UnsupportedFeatureError

    try:
        return LM15Engine(RouterConfig(env={})).resolve(model).provider
    except (UnknownModelError, UnsupportedFeatureError):
        return None


class NativeEngine:
    """DSPy's own client for ``model`` (its lm15 engine, sync and async), over transports that
    publish every reply's rate-limit headers to ``feed`` (:mod:`toolkit.lm._replies`). Keys come
    from the environment unless ``api_key`` is given; ``api_base``: the server. What it can do
    (response schema, parameters) is what DSPy says of ``twin``, a ``dspy.LM`` of the same model
    that is never called."""

    def __init__(self, model: str, feed: RateFeed, *, api_base: str | None = None, api_key: str | None = None,
                 twin: Any = None) -> None:
        from dspy.clients.engines import AsyncLM15Engine, LM15Engine
        from dspy.lm15 import RouterConfig

        from toolkit.lm._replies import PublishingAsyncTransport, PublishingTransport

        provider = native_provider(model)
        if provider is None:
            raise ValueError(f"{model!r} is not a model DSPy's own client reaches")
        self.provider, self.api_base, self.twin = provider, api_base, twin
        where = {"api_keys": {provider: api_key} if api_key else None,
                 "base_urls": {provider: api_base} if api_base else None}
        self.native = LM15Engine(RouterConfig(transport=PublishingTransport(feed), **where))
        self.async_native = AsyncLM15Engine(RouterConfig(transport=PublishingAsyncTransport(feed), **where))

    @functools.cached_property
    def supports_response_schema(self) -> bool:
        return bool(self.twin is not None and self.twin.supports_response_schema)

    @functools.cached_property
    def supported_params(self) -> frozenset[str]:
        return frozenset(self.twin.supported_params if self.twin is not None else ())

    @functools.cached_property
    def supports_function_calling(self) -> bool:
        return bool(self.twin is not None and self.twin.supports_function_calling)

    @functools.cached_property
    def supports_reasoning(self) -> bool:
        return bool(self.twin is not None and self.twin.supports_reasoning)

    def complete(self, request: Any) -> Response:
        return self.billed(self.native.complete(request))

    def stream(self, request: Any):
        return self.native.stream(request)

    def billed(self, response: Response) -> Response:
        """lm15 counts Anthropic's input tokens apart from those read from or written to its cache;
        DSPy adds them back for its own client (it knows the provider), not for an engine: so here."""
        usage = response.usage
        if "anthropic" not in self.provider or usage.input_tokens is None:
            return response
        inputs = usage.input_tokens + (usage.cache_read_tokens or 0) + (usage.cache_write_tokens or 0)
        total = inputs + usage.output_tokens if usage.output_tokens is not None else None
        return dataclasses.replace(response, usage=dataclasses.replace(usage, input_tokens=inputs, total_tokens=total))

    def close(self) -> None:
        self.native.close()
        self.native.config.transport.close()


class AsyncNativeEngine:
    """Async face of a :class:`NativeEngine`: its lm15 async engine, no thread."""

    def __init__(self, sync: NativeEngine) -> None:
        self.sync = sync

    async def complete(self, request: Any) -> Response:
        return self.sync.billed(await self.sync.async_native.complete(request))

    def stream(self, request: Any):
        return self.sync.async_native.stream(request)

    async def aclose(self) -> None:
        """Close this event loop's connections (the engine stays usable from another loop)."""
        await self.sync.async_native.config.transport.aclose()


class CompatibleServerEngine(NativeEngine):
    """An OpenAI-compatible server (``openai/NAME`` at ``api_base``) through DSPy's own client,
    each request rewritten by :func:`server_request`."""

    supports_response_schema = True
    supported_params = frozenset({"response_format", "max_tokens", "temperature"})

    def complete(self, request: Any) -> Response:
        return super().complete(server_request(request))

    def stream(self, request: Any):
        return super().stream(server_request(request))


class AsyncCompatibleServerEngine(AsyncNativeEngine):
    """Async face of a :class:`CompatibleServerEngine`."""

    async def complete(self, request: Any) -> Response:
        return await super().complete(server_request(request))

    def stream(self, request: Any):
        return super().stream(server_request(request))
