"""Shared pieces of the toolkit's DSPy engines (``complete(Request) -> Response``)."""

from __future__ import annotations

import asyncio
from typing import Any

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


def make_response(model: str, text: str, finish_reason: str, tokens_in: int, tokens_out: int) -> Response:
    return Response(
        id=None,
        model=model,
        message=Message.assistant([TextPart(text)]),
        finish_reason="length" if finish_reason == "length" else "stop",
        usage=Usage(input_tokens=tokens_in, output_tokens=tokens_out),
    )


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
