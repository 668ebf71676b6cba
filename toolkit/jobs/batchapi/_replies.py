"""Batch output lines settled by the same code as synchronous replies.

Each output line's reply goes through the DSPy module's own reply handling
(:func:`toolkit.extraction.settle_reply`: :func:`~toolkit.extraction.parse_reply`, then
:func:`~toolkit.extraction.validate_reply`; a reply cut off by ``max_tokens`` or mended by
json-repair loses its last record) and becomes the executor's
:class:`~toolkit.core._batches.BatchExtractionResult` (:func:`~toolkit.extraction.to_result`). Documents
a line answered are extracted; the rest (left out of a reply, cut off, in a failed line, in a
line the batch never answered) are handed back for the synchronous executor.

Output files come from outside and are read as such: a line that is not a JSON object with a
``custom_id`` is unreadable (its request has no line: its documents go back), a line whose shape is
not a reply (no body, no choice, no text) is a failed line, and usage that is not a count is 0 (a
cached count at most the prompt's). Nothing in a line can raise out of :func:`settle_job`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from toolkit.core import Counts, DocumentBatch
from toolkit.execution import AttemptRecord, DocumentOutcome, call_counts

BATCH_PREFIX = "batch-api:"  # batch ids of calls made through a batch API (billed at batch prices)
BATCH_API_KEYS = ("calls", "tokens_in", "tokens_out", "cached_tokens")  # counts reported as batch_api_<key>
MAX_TOKENS = 10 ** 9  # a larger token count in a line is no count


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


def read_lines(data: bytes | None) -> tuple[dict[str, dict[str, Any]], int]:
    """An output or error file's lines by ``custom_id`` (the first line of each), and how many
    lines could not be read (not JSON, not an object, no ``custom_id`` string)."""
    lines: dict[str, dict[str, Any]] = {}
    unreadable = 0
    for raw in (data or b"").splitlines():
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except ValueError:  # not JSON, or not UTF-8
            line = None
        cid = line.get("custom_id") if isinstance(line, dict) else None
        if not isinstance(cid, str) or not cid:
            unreadable += 1
            continue
        lines.setdefault(cid, line)
    return lines, unreadable


def _count(value: Any) -> int:
    """A token count as a provider reports it, or 0 for anything that is not one."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0
    if isinstance(value, float) and (not math.isfinite(value) or not value.is_integer()):
        return 0
    return int(value) if 0 <= value < MAX_TOKENS else 0


def usage_tokens(usage: Any) -> tuple[int, int, int]:
    """(prompt, output, cached prompt) tokens of a line's ``usage``, whatever its shape: what is
    not a count is 0, and the cached count is at most the prompt's."""
    from toolkit.lm import cached_tokens

    if not isinstance(usage, Mapping):
        return 0, 0, 0
    details = usage.get("prompt_tokens_details")
    cached = _count(details.get("cached_tokens")) if isinstance(details, Mapping) else 0
    prompt = _count(usage.get("prompt_tokens"))
    clean = {"prompt_tokens_details": {"cached_tokens": cached},
             "cache_read_input_tokens": _count(usage.get("cache_read_input_tokens"))}
    return prompt, _count(usage.get("completion_tokens")), min(prompt, cached_tokens(clean))


class _Unreadable(ValueError):
    """A line whose shape is not a reply."""


def _error_text(value: Any) -> str:
    """An error (a line's ``error``, or a failed response's body) in words, whatever its shape."""
    if isinstance(value, Mapping):
        inner = value.get("error", value)
        if isinstance(inner, Mapping):
            return f"{inner.get('code') or inner.get('type') or 'error'}: {inner.get('message') or ''}".strip()
        return str(inner)
    return str(value) if value not in (None, "", [], {}) else "no reply"


def _line_error(line: Mapping[str, Any]) -> str | None:
    """Why a line failed (its ``error``, or a non-200 response), or None for a reply."""
    response = line.get("response")
    if line.get("error"):
        return _error_text(line["error"])
    if not isinstance(response, Mapping):
        return "no response"
    if response.get("status_code") != 200:
        return f"status {response.get('status_code')}: {_error_text(response.get('body'))}"
    return None


def _reply(body: Any) -> tuple[str, bool, Any]:
    """A reply body's text, whether it was cut off by ``max_tokens``, and its usage."""
    if not isinstance(body, Mapping):
        raise _Unreadable("status 200 without a reply body")
    choices = body.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else None
    if not isinstance(choice, Mapping):
        raise _Unreadable("a reply without a choice")
    message = choice.get("message")
    text = message.get("content") if isinstance(message, Mapping) else 0
    if not isinstance(text, (str, type(None))):
        raise _Unreadable("a reply without text")
    return text or "", choice.get("finish_reason") == "length", body.get("usage")


def settle_line(extractor: Any, batch: DocumentBatch, line: Mapping[str, Any], at: float, record_id: str = "",
                sent: Sequence[str] | None = None) -> Settled:
    """One output (or error) line for the request of ``batch`` (see the module docstring). The
    line's record has batch id ``batch-api:<record_id or batch id>`` and the documents ``sent``
    in the request (default: the batch's; a resumed job may have only some of them at hand)."""
    from toolkit.extraction import settle_reply, to_result

    ids = tuple(batch.document_ids)
    record = AttemptRecord(batch_id=BATCH_PREFIX + (record_id or batch.batch_id), document_ids=tuple(sent or ids),
                           attempt=1, outcome="ok", at=at)
    try:
        error = _line_error(line)
        if error is None:
            text, truncated, usage = _reply(line["response"]["body"])
            prediction = settle_reply(extractor, list(batch.documents), text, usage_tokens(usage), truncated,
                                      batch.max_tokens)
            result = to_result(batch, prediction.validated, prediction.usage)
    except (_Unreadable, ValueError, TypeError, KeyError, AttributeError, IndexError) as exc:
        error = str(exc) if isinstance(exc, _Unreadable) else f"unreadable reply ({type(exc).__name__})"
    if error is not None:
        failed = replace(record, outcome="error", error_class="batch_line", error=error[:500], counts=Counts(calls=1))
        return Settled(attempts=[failed], retry={i: f"batch API: {error[:200]}" for i in ids})
    answered = result.per_document_entities
    # as a synchronous call counts, but charged to no rate limiter, and usage as the line reports it
    counts = replace(call_counts(batch, result), budget_tokens=0, usage_reports=int(bool(usage_tokens(usage)[0])),
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
               status: str, at: float, job_key: str = "", sent: Mapping[str, Sequence[str]] | None = None) -> Settled:
    """All requests of a finished job (``custom_id`` -> its batch): each one's line from the output
    file, else the error file, else none (an expired, failed or cancelled batch, or an unreadable
    line): its documents go back (with ``status``). ``job_key``: the job's, in each record's batch
    id (``batch-api:<job>/<batch>``: unique in the run); ``sent``: each request's documents as sent."""
    (good, unreadable), (bad, more) = read_lines(output), read_lines(errors)
    missing = f"no reply (batch {status}" + (f"; {unreadable + more} unreadable lines)" if unreadable + more else ")")
    total = Settled()
    for cid, batch in requests.items():
        line = good.get(cid) or bad.get(cid)
        if line is None:
            total.retry.update({i: f"batch API: {missing}" for i in batch.document_ids})
            continue
        record_id = f"{job_key}/{batch.batch_id}" if job_key else ""
        part = settle_line(extractor, batch, line, at, record_id, (sent or {}).get(cid))
        total.outcomes += part.outcomes
        total.attempts += part.attempts
        total.retry.update(part.retry)
    return total
