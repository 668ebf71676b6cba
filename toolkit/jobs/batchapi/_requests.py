"""Batch requests: each packed batch as one JSONL request line (OpenAI Batch format), and request
files split to stay within a provider's limits.

A line carries exactly what the synchronous path sends for that batch: the messages and config of
:meth:`toolkit.extraction.BatchExtractor.messages` (instructions, worked example, documents; the
output cap, temperature and per-batch JSON schema). Its ``custom_id`` is the packed batch's id
(unique in its file, and a valid id for every provider's format: Anthropic's allows letters,
digits, ``-`` and ``_`` only); the batch itself carries the run and the job in its metadata.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from toolkit.core import DocumentBatch

ENDPOINT = "/v1/chat/completions"


@dataclass(frozen=True)
class BatchLimits:
    """A provider's limits on one request file (OpenAI's by default: 50,000 requests, 200 MB)."""

    max_requests: int = 50_000
    max_bytes: int = 200 * 1024 * 1024

    def __post_init__(self) -> None:
        if self.max_requests < 1 or self.max_bytes < 1:
            raise ValueError("batch limits must be positive")


@dataclass(frozen=True)
class Request:
    """One request line: its ``custom_id``, the packed batch it came from and its JSONL bytes."""

    custom_id: str
    batch: DocumentBatch
    line: bytes  # one JSON object and a newline

    @property
    def document_ids(self) -> list[str]:
        return list(self.batch.document_ids)


def request_line(cid: str, model: str, messages: list[dict[str, Any]], config: dict[str, Any]) -> bytes:
    """The JSONL line of one chat-completions request (OpenAI Batch format)."""
    body: dict[str, Any] = {"model": model, "messages": messages}
    for key in ("max_tokens", "response_format", "temperature"):
        if config.get(key) is not None:
            body[key] = config[key]
    line = {"custom_id": cid, "method": "POST", "url": ENDPOINT, "body": body}
    return json.dumps(line, ensure_ascii=False).encode("utf-8") + b"\n"


def build_requests(extractor: Any, batches: Iterable[DocumentBatch], model: str, allowance: Any) -> list[Request]:
    """One :class:`Request` per packed batch. ``extractor``: the run's
    :class:`~toolkit.extraction.BatchExtractor` (its messages and config, as a synchronous call
    sends them); ``allowance(batch)``: the batch's ``max_tokens`` (the service's)."""
    out = []
    for batch in batches:
        messages, config = extractor.messages(list(batch.documents), allowance(batch))
        out.append(Request(batch.batch_id, batch, request_line(batch.batch_id, model, messages, config)))
    return out


def split_files(requests: Sequence[Request], limits: BatchLimits) -> list[list[Request]]:
    """``requests`` in consecutive files of at most ``limits.max_requests`` lines and
    ``limits.max_bytes`` bytes each. A single line above the byte limit is refused (no provider
    would take it: pack smaller batches)."""
    files: list[list[Request]] = []
    current: list[Request] = []
    size = 0
    for request in requests:
        n = len(request.line)
        if n > limits.max_bytes:
            raise ValueError(f"request {request.custom_id} is {n} bytes, above the file limit of "
                             f"{limits.max_bytes}: lower the token budget")
        if current and (len(current) >= limits.max_requests or size + n > limits.max_bytes):
            files.append(current)
            current, size = [], 0
        current.append(request)
        size += n
    if current:
        files.append(current)
    return files


def file_bytes(requests: Sequence[Request]) -> bytes:
    """A request file's contents: its lines, in order."""
    return b"".join(r.line for r in requests)
