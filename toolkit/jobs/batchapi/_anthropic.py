"""Anthropic's Message Batches behind the batch API runner's provider interface (``anthropic/MODEL``).

The runner builds each request as an OpenAI batch line (the synchronous path's messages and
config); :class:`AnthropicBatches` sends it as Anthropic's ``{"custom_id", "params"}``, the params
built by DSPy's own Anthropic client from the same messages and config (:func:`anthropic_params`:
system blocks with the prompt-cache mark, ``output_config`` with the JSON schema, ``max_tokens``,
``temperature``), exactly what a synchronous ``anthropic/`` call sends. Result lines (``succeeded``
with a message, ``errored``, ``canceled``, ``expired``) come back as OpenAI-shaped lines
(:func:`openai_line`) for :mod:`toolkit.jobs.batchapi._replies`; a batch is billed at half the price.

Anthropic takes a batch's requests inline, not as a file: :meth:`AnthropicBatches.upload` keeps
them in this process until :meth:`~AnthropicBatches.create` sends them, so a job uploaded but not
created before a crash is lost (its documents are sent again). Its batches carry no metadata, so a
batch accepted in the instant before a crash cannot be found again: that job is sent again too.

Transports: :class:`AnthropicHTTP` (``POST /v1/messages/batches``, ``GET
/v1/messages/batches/{id}``, ``GET /v1/messages/batches/{id}/results``), or the in-process emulated
provider (:class:`~toolkit.jobs.batchapi._emulated.EmulatedMessageBatches`, on a virtual clock).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import replace
from typing import Any

from toolkit.jobs.batchapi._providers import BatchInfo, NotAtProvider, json_object

VERSION = "2023-06-01"  # the anthropic-version header
RESULTS = "results:"  # an output file id here: the results of the batch named after it
COUNTS = ("processing", "succeeded", "errored", "canceled", "expired")  # a message batch's request counts


def anthropic_params(body: dict[str, Any], cache: Any = None) -> dict[str, Any]:
    """The Messages API params of an OpenAI chat ``body`` (model, messages, ``max_tokens``,
    ``temperature``, ``response_format``) as DSPy's Anthropic client builds them; ``cache``: the
    run's prompt-cache setting (:func:`toolkit.lm._provider.prompt_cache_config`)."""
    from dspy._vendor.lm15.providers.anthropic import AnthropicLM
    from dspy._vendor.lm15.providers.openai_chat import request_from_openai_chat

    request = request_from_openai_chat(body)
    if cache is not None:
        request = replace(request, config=replace(request.config, cache=cache))
    params = AnthropicLM(api_key="not-sent")._payload(request, stream=False)  # built here, sent in a batch
    params.pop("stream", None)
    return params


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _completion(message: Any) -> Any:
    """An Anthropic message as an OpenAI chat completion's body (its shape left for
    :mod:`toolkit.jobs.batchapi._replies` to judge where it is not one)."""
    if not isinstance(message, dict):
        return message
    content = message.get("content")
    if isinstance(content, list):
        blocks = [b for b in content if isinstance(b, dict)]
        text = "".join(b["text"] for b in blocks if b.get("type") == "text" and isinstance(b.get("text"), str))
        tools = [b.get("input") for b in blocks if b.get("type") == "tool_use"]
        content = text or (json.dumps(tools[0]) if tools else "")
    usage = json_object(message.get("usage"))
    cached = _int(usage.get("cache_read_input_tokens"))
    prompt = _int(usage.get("input_tokens")) + cached + _int(usage.get("cache_creation_input_tokens"))
    finish = "length" if message.get("stop_reason") == "max_tokens" else "stop"
    return {"choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": _int(usage.get("output_tokens")),
                      "prompt_tokens_details": {"cached_tokens": cached}}}


def openai_line(raw: Any) -> Any:
    """An Anthropic result line as an OpenAI batch output line (anything else as it is)."""
    if not isinstance(raw, dict) or not isinstance(raw.get("custom_id"), str):
        return raw
    result = json_object(raw.get("result"))
    kind = result.get("type")
    if kind == "succeeded":
        body = _completion(result.get("message"))
        return {"custom_id": raw["custom_id"], "response": {"status_code": 200, "body": body}}
    error = result.get("error") if kind == "errored" else None
    return {"custom_id": raw["custom_id"], "error": error or {"code": kind or "no_result",
                                                              "message": f"request {kind or 'without a result'}"}}


def batch_info(batch: dict[str, Any]) -> BatchInfo:
    """A message batch as :class:`BatchInfo`: ended is done (per-request outcomes are in its results)."""
    if not isinstance(batch.get("id"), str) or not isinstance(batch.get("processing_status"), str):
        raise ValueError(f"not a message batch: {str(batch)[:200]}")
    counts = json_object(batch.get("request_counts"))
    n = {k: _int(counts.get(k)) for k in COUNTS}
    status = {"ended": "completed", "canceling": "cancelling"}.get(batch["processing_status"], "in_progress")
    output = RESULTS + batch["id"] if status == "completed" else None
    return BatchInfo(batch["id"], status, output, None, sum(n.values()), n["succeeded"],
                     n["errored"] + n["canceled"] + n["expired"])


class AnthropicBatches:
    """The batch provider for ``anthropic/`` models over ``transport`` (see the module docstring);
    ``cache``: the run's prompt-cache setting, as its synchronous calls send it."""

    def __init__(self, transport: Any, cache: Any = None) -> None:
        self.transport, self.cache = transport, cache
        self._requests: dict[str, list[dict[str, Any]]] = {}

    def upload(self, name: str, data: bytes) -> str:
        lines = [json.loads(raw) for raw in data.splitlines() if raw.strip()]
        requests = [{"custom_id": line["custom_id"], "params": anthropic_params(line["body"], self.cache)}
                    for line in lines]
        file_id = f"inline-{uuid.uuid4().hex[:16]}"
        self._requests[file_id] = requests
        return file_id

    def create(self, input_file_id: str, metadata: dict[str, str]) -> str:
        if input_file_id not in self._requests:  # kept by a process that has ended
            raise NotAtProvider(input_file_id)
        return str(self.transport.create_message_batch(self._requests.pop(input_file_id))["id"])

    def find(self, metadata: dict[str, str]) -> str | None:
        return None  # Anthropic's batches carry no metadata

    def retrieve(self, batch_id: str) -> BatchInfo:
        return batch_info(self.transport.retrieve_message_batch(batch_id))

    def content(self, file_id: str) -> bytes:
        if not file_id.startswith(RESULTS):
            raise NotAtProvider(file_id)
        lines = []
        for raw in self.transport.message_batch_results(file_id.removeprefix(RESULTS)).splitlines():
            try:
                lines.append(json.dumps(openai_line(json.loads(raw))).encode())
            except ValueError:
                lines.append(raw)  # unreadable: the settling says so
        return b"\n".join(lines)

    def sleep(self, seconds: float) -> None:
        self.transport.sleep(seconds)

    def now(self) -> float:
        return self.transport.now()


class AnthropicHTTP:
    """Anthropic's Message Batches API over HTTP: ``api_base`` (default Anthropic's), key from
    ``ANTHROPIC_API_KEY`` (a placeholder for a local server when unset)."""

    def __init__(self, api_base: str | None = None, api_key: str | None = None, timeout: float = 600.0) -> None:
        self.base = (api_base or "https://api.anthropic.com").rstrip("/").removesuffix("/v1")
        self.key = api_key or os.environ.get("ANTHROPIC_API_KEY") or ("no-key" if api_base else None)
        self.timeout = timeout

    def _send(self, method: str, path: str, body: Any = None) -> Any:
        import httpx

        headers = {"anthropic-version": VERSION, **({"x-api-key": self.key} if self.key else {})}
        reply = httpx.request(method, f"{self.base}/v1/messages/batches{path}", json=body, headers=headers,
                              timeout=self.timeout)
        if reply.status_code == 404:
            raise NotAtProvider(path.strip("/") or "batches")
        reply.raise_for_status()
        return reply

    def create_message_batch(self, requests: list[dict[str, Any]]) -> dict[str, Any]:
        return self._send("POST", "", {"requests": requests}).json()

    def retrieve_message_batch(self, batch_id: str) -> dict[str, Any]:
        return self._send("GET", f"/{batch_id}").json()

    def message_batch_results(self, batch_id: str) -> bytes:
        return self._send("GET", f"/{batch_id}/results").content

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def now(self) -> float:
        return time.monotonic()
