"""Shared pieces of the toolkit's DSPy engines (``complete(Request) -> Response``)."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import dspy
from dspy.lm15 import Message, Response, TextPart, Usage, response_to_events


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


def cached_tokens(usage: dict[str, Any]) -> int:
    """Prompt tokens a provider read from its prompt cache, from a usage dict as DSPy reports it
    (OpenAI's ``prompt_tokens_details.cached_tokens``; Anthropic's ``cache_read_input_tokens``)."""
    details = usage.get("prompt_tokens_details") or {}
    return int(details.get("cached_tokens") or usage.get("cache_read_input_tokens") or 0)


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


class CompatibleServerEngine(SyncEngineMixin):
    """An OpenAI-compatible server through ``client``, DSPy's own ``dspy.LM`` for it, each request
    rewritten by :func:`server_request`. ``client`` records neither usage nor history: the
    ``dspy.LM`` over this engine does."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def complete(self, request: Any) -> Response:
        with dspy.context(usage_tracker=None, disable_history=True):
            return self.client(server_request(request))


class AsyncCompatibleServerEngine(ThreadedAsyncEngine):
    """Async face of a :class:`CompatibleServerEngine`: its client's own async call, no thread."""

    async def complete(self, request: Any) -> Response:
        with dspy.context(usage_tracker=None, disable_history=True):
            return await self.sync.client.acall(server_request(request))
