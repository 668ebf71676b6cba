"""Batch output lines settled by the same code as synchronous replies.

Each output line's reply goes through the DSPy module's own reply handling
(:class:`toolkit.extraction.module._BatchCalls`: :func:`~toolkit.extraction.parse_reply`, then
:func:`~toolkit.extraction.validate_reply`; a reply cut off by ``max_tokens`` or mended by
json-repair loses its last record) and becomes the executor's
:class:`~toolkit.models.BatchExtractionResult` (:func:`~toolkit.extraction.to_result`). Documents
a line answered are extracted; the rest (left out of a reply, cut off, in a failed line, in a
line the batch never answered) are handed back for the synchronous executor.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from toolkit.counts import Counts
from toolkit.documents import Document
from toolkit.executor import call_counts
from toolkit.metrics import AttemptRecord
from toolkit.models import DocumentBatch
from toolkit.outcomes import DocumentOutcome

BATCH_PREFIX = "batch-api:"  # batch ids of calls made through a batch API (billed at batch prices)
BATCH_API_KEYS = ("calls", "tokens_in", "tokens_out", "cached_tokens")  # counts reported as batch_api_<key>


def is_batch_priced(record: AttemptRecord) -> bool:
    """Whether ``record`` is a call made through a provider's batch API."""
    return record.batch_id.startswith(BATCH_PREFIX)


def batch_api_counts(attempts: Iterable[AttemptRecord]) -> Counts:
    """The counts of the calls among ``attempts`` made through a batch API (billed at batch prices)."""
    return Counts.total(a.counts for a in attempts if is_batch_priced(a))


def batch_api_fields(counts: Counts) -> dict[str, int]:
    """``counts`` (:func:`batch_api_counts`) as a summary's ``batch_api_<key>`` figures."""
    return {f"batch_api_{k}": getattr(counts, k) for k in BATCH_API_KEYS}


@dataclass
class Settled:
    """What a job's output came to: outcomes of answered documents, one record per line, and the
    documents to send again synchronously (with why)."""

    outcomes: list[DocumentOutcome] = field(default_factory=list)
    attempts: list[AttemptRecord] = field(default_factory=list)
    retry: dict[str, str] = field(default_factory=dict)  # doc id -> why it goes back to the sync executor


def read_lines(data: bytes | None) -> dict[str, dict[str, Any]]:
    """An output or error file's lines by ``custom_id`` (lines without one are skipped)."""
    lines = {}
    for raw in (data or b"").splitlines():
        if raw.strip():
            line = json.loads(raw)
            if line.get("custom_id"):
                lines[line["custom_id"]] = line
    return lines


def settle_reply(extractor: Any, documents: Sequence[Document], text: str, usage: Mapping[str, Any],
                 finish_reason: str | None, max_tokens: int | None) -> Any:
    """One reply to a packed call on ``documents``, as the DSPy module settles a synchronous one:
    a ``dspy.Prediction`` with ``validated``, ``usage`` (prompt, output, cached) and ``cut``."""
    from toolkit.extraction.module import _BatchCalls
    from toolkit.lm.engine import cached_tokens

    calls = _BatchCalls(extractor, documents, max_tokens)
    tokens = (usage.get("prompt_tokens") or 0, usage.get("completion_tokens") or 0, cached_tokens(dict(usage)))
    calls.accept_text(text, tokens, truncated=finish_reason == "length")
    return calls.result()


def _line_error(line: Mapping[str, Any]) -> str | None:
    """Why a line failed (its ``error``, or a non-200 response), or None for a good line."""
    response = line.get("response") or {}
    if line.get("error"):
        error = line["error"]
        return f"{error.get('code') or 'error'}: {error.get('message') or ''}".strip() if isinstance(error, dict) else str(error)
    if response.get("status_code") != 200:
        body = response.get("body") or {}
        message = (body.get("error") or {}).get("message") if isinstance(body, dict) else None
        return f"status {response.get('status_code')}: {message or 'no reply'}"
    return None


def settle_line(extractor: Any, batch: DocumentBatch, line: Mapping[str, Any], at: float) -> Settled:
    """One output (or error) line for the request of ``batch`` (see the module docstring)."""
    from toolkit.extraction import to_result

    ids = tuple(batch.document_ids)
    record = AttemptRecord(batch_id=BATCH_PREFIX + batch.batch_id, document_ids=ids, attempt=1, outcome="ok", at=at)
    error = _line_error(line)
    if error is not None:
        failed = replace(record, outcome="error", error_class="batch_line", error=error[:500], counts=Counts(calls=1))
        return Settled(attempts=[failed], retry={i: f"batch API: {error}" for i in ids})
    body = line["response"]["body"]
    choice = (body.get("choices") or [{}])[0]
    text = (choice.get("message") or {}).get("content") or ""
    usage = body.get("usage") or {}
    prediction = settle_reply(extractor, list(batch.documents), text, usage, choice.get("finish_reason"),
                              batch.max_tokens)
    result = to_result(batch, prediction.validated, prediction.usage)
    answered = result.per_document_entities
    # as a synchronous call counts, but charged to no rate limiter, and usage as the line reports it
    counts = replace(call_counts(batch, result), budget_tokens=0, usage_reports=int(bool(usage)),
                     requeued=len(ids) - len(answered))
    settled = Settled(attempts=[replace(record, counts=counts)])
    why = "cut off by max_tokens" if prediction.cut else (result.error_message or "left out of the reply")
    for doc_id in ids:
        if doc_id in answered:
            settled.outcomes.append(DocumentOutcome(doc_id, "extracted", answered[doc_id],
                                                    result.per_document_relationships.get(doc_id, []),
                                                    dropped=result.per_document_dropped.get(doc_id, []), calls=1))
        else:
            settled.retry[doc_id] = f"batch API: {why}"
    return settled


def settle_job(extractor: Any, requests: Mapping[str, DocumentBatch], output: bytes | None, errors: bytes | None,
               status: str, at: float) -> Settled:
    """All requests of a finished job (``custom_id`` -> its batch): each one's line from the output
    file, else the error file, else none (an expired, failed or cancelled batch): its documents go
    back (with ``status``)."""
    good, bad = read_lines(output), read_lines(errors)
    total = Settled()
    for cid, batch in requests.items():
        line = good.get(cid) or bad.get(cid)
        if line is None:
            total.retry.update({i: f"batch API: no reply (batch {status})" for i in batch.document_ids})
            continue
        part = settle_line(extractor, batch, line, at)
        total.outcomes += part.outcomes
        total.attempts += part.attempts
        total.retry.update(part.retry)
    return total
