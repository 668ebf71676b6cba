"""An emulated batch provider: OpenAI's files and batches API answered by the emulated provider.

:class:`EmulatedBatches` keeps files and batches, answers every request line with the emulated
provider's extractor (:class:`toolkit.lm._emulated.EmulatedEngine`, the same gazetteer reply a
synchronous emulated call gets) and reports a batch done after its turnaround. In process it runs
on a virtual clock (polls advance it: a day of waiting takes no time); behind
:mod:`toolkit.jobs.batchapi.server` it runs on the wall clock and keeps its state in a directory, so a
restarted server still knows its files and batches. :class:`LineFaults` injects what real batch
APIs do: failed lines (error file), cut-off replies, an expired or failed batch, and lines no reader
expects (not JSON, not an object, an error as text, no body, a null choice, a non-text reply). A
batch or file it does not know raises :class:`~toolkit.jobs.batchapi._providers.NotAtProvider`.
:class:`EmulatedMessageBatches` also speaks Anthropic's Message Batches (requests inline, results
as JSONL), the transport of :class:`~toolkit.jobs.batchapi._anthropic.AnthropicBatches` in process.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path
from typing import Any

from toolkit.jobs.batchapi._anthropic import COUNTS
from toolkit.jobs.batchapi._providers import BatchInfo, NotAtProvider, find_batch
from toolkit.jobs.batchapi._requests import ENDPOINT

QUEUE_SECONDS = 300.0  # an emulated batch waits this long before its requests run
PARALLEL_REQUESTS = 32  # requests an emulated batch runs at once


@dataclass(frozen=True)
class LineFaults:
    """Faults of an emulated batch: every ``fail_every``-th line fails (error file), every
    ``cut_every``-th reply is cut off (``finish_reason: length``), every ``poison_every``-th output
    line is one no reader expects (see :func:`poison_line`); ``expire``: the batch expires with only
    its first half answered; ``fail_batch``: the batch fails (no output at all)."""

    fail_every: int = 0
    cut_every: int = 0
    poison_every: int = 0
    expire: bool = False
    fail_batch: bool = False


def answer(engine: Any, body: dict[str, Any]) -> dict[str, Any]:
    """A chat-completion reply to ``body`` from the emulated provider's extractor (the documents
    read from the prompt, as a synchronous emulated call reads them), with its usage."""
    from toolkit.lm import TOKENIZER, documents_in_prompt, schema_of
    from toolkit.packing import estimate_tokens

    messages = body["messages"]
    text = engine.reply(documents_in_prompt(messages), schema_of(body.get("response_format")), None)
    prompt_tokens = estimate_tokens("\n".join(m["content"] for m in messages), TOKENIZER)
    output_tokens, cap = estimate_tokens(text, TOKENIZER), body.get("max_tokens") or 1024
    finish = "stop"
    if output_tokens > cap:
        text, output_tokens, finish = text[: len(text) * cap // output_tokens], cap, "length"
    return _completion(body.get("model", "emulated"), text, finish, prompt_tokens, output_tokens)


def poison_line(n: int, cid: str | None, rid: str, body: dict[str, Any]) -> str:
    """The ``n``-th kind (cycling) of output line no reader expects, for request ``cid``: cut off
    mid-way (not JSON), a JSON list, a 500 whose error is text, a 200 without a body, a null choice,
    a reply whose text is an object."""
    reply = {"status_code": 200, "request_id": rid, "body": body}
    kinds = (lambda: json.dumps({"id": rid, "custom_id": cid, "response": reply})[:60],
             lambda: json.dumps([cid, rid]),
             lambda: json.dumps({"id": rid, "custom_id": cid,
                                 "response": {"status_code": 500, "body": {"error": "boom"}}}),
             lambda: json.dumps({"id": rid, "custom_id": cid, "response": {**reply, "body": None}}),
             lambda: json.dumps({"id": rid, "custom_id": cid,
                                 "response": {**reply, "body": {**body, "choices": [None]}}}),
             lambda: json.dumps({"id": rid, "custom_id": cid, "response": {**reply, "body": {
                 **body, "choices": [{"index": 0, "message": {"content": {"results": []}}}]}}}))
    return kinds[n % len(kinds)]()


def _completion(model: str, text: str, finish: str, prompt_tokens: int, output_tokens: int) -> dict[str, Any]:
    return {"id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "object": "chat.completion", "created": int(time.time()),
            "model": model, "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                         "finish_reason": finish}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": output_tokens,
                      "total_tokens": prompt_tokens + output_tokens, "prompt_tokens_details": {"cached_tokens": 0}}}


class EmulatedFiles:
    """The files (and the batches' records) of an emulated provider, on its clock: in ``state_dir``
    if given (a restarted instance on it knows them), else in memory; ``wall_clock``: time from
    ``time.time()``, else a virtual clock that :meth:`sleep` advances. ``calls`` counts the API
    calls received."""

    def __init__(self, state_dir: str | Path | None = None, wall_clock: bool = False) -> None:
        self.wall_clock = wall_clock
        self.calls: Counter[str] = Counter()
        self._virtual = 0.0
        self._lock = threading.RLock()
        self.dir = Path(state_dir) if state_dir is not None else None
        self.files: dict[str, dict[str, Any]] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self._data: dict[str, bytes] = {}
        if self.dir is not None:
            (self.dir / "files").mkdir(parents=True, exist_ok=True)
            state = self.dir / "state.json"
            if state.exists():
                saved = json.loads(state.read_text())
                self.files, self.batches = saved["files"], saved["batches"]

    def now(self) -> float:
        return time.time() if self.wall_clock else self._virtual

    def sleep(self, seconds: float) -> None:
        if self.wall_clock:
            time.sleep(seconds)
        else:
            self._virtual += seconds

    def upload(self, name: str, data: bytes, purpose: str = "batch") -> str:
        with self._lock:
            self.calls["upload"] += 1
            return self._store(name, data, purpose)["id"]

    def _store(self, name: str, data: bytes, purpose: str) -> dict[str, Any]:
        file: dict[str, Any] = {"id": f"file-{uuid.uuid4().hex[:24]}", "object": "file", "bytes": len(data),
                "created_at": int(self.now()), "filename": name, "purpose": purpose, "status": "processed"}
        self.files[file["id"]] = file
        if self.dir is not None:
            (self.dir / "files" / file["id"]).write_bytes(data)
        else:
            self._data[file["id"]] = data
        self._save()
        return file

    def content(self, file_id: str) -> bytes:
        with self._lock:
            self.calls["content"] += 1
            if file_id not in self.files:
                raise NotAtProvider(file_id)
            return (self.dir / "files" / file_id).read_bytes() if self.dir is not None else self._data[file_id]

    def _save(self) -> None:
        if self.dir is not None:
            path = self.dir / "state.json"
            path.with_suffix(".tmp").write_text(json.dumps({"files": self.files, "batches": self.batches}))
            path.with_suffix(".tmp").replace(path)


class EmulatedBatches(EmulatedFiles):
    """Files and batches answered by ``engine`` (an :class:`~toolkit.lm._emulated.EmulatedEngine`).

    ``state_dir``: keep files and batches there (a restarted instance on it knows them); None: in
    memory. ``turnaround``: seconds from creation to completion (None: the profile's, from its
    call times: :data:`QUEUE_SECONDS` plus the requests' seconds over :data:`PARALLEL_REQUESTS`).
    ``wall_clock``: time from ``time.time()``; otherwise a virtual clock that :meth:`sleep`
    advances. ``calls`` counts the API calls received (uploads, creates, ...)."""

    def __init__(self, engine: Any, state_dir: str | Path | None = None, turnaround: float | None = None,
                 faults: LineFaults | None = None, wall_clock: bool = False) -> None:
        super().__init__(state_dir, wall_clock)
        self.engine = engine
        self.turnaround = turnaround
        self.faults = faults or LineFaults()

    def create(self, input_file_id: str, metadata: dict[str, str] | None = None) -> str:
        return self.create_batch(input_file_id, metadata)["id"]

    def list_batches(self, after: str | None = None, limit: int = 20) -> dict[str, Any]:
        """A page of batches, newest first (OpenAI's ``GET /v1/batches``): those after the batch
        ``after``, at most ``limit``."""
        with self._lock:
            self.calls["list"] += 1
            ids = [i for i in reversed(self.batches) if self.batches[i].get("object") == "batch"]
            start = ids.index(after) + 1 if after in ids else 0
            page = [_public(self.batches[i]) for i in ids[start:start + max(1, min(limit, 100))]]
            return {"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
                    "last_id": page[-1]["id"] if page else None, "has_more": start + len(page) < len(ids)}

    def find(self, metadata: dict[str, str]) -> str | None:
        return find_batch(_pages(self), metadata)

    def create_batch(self, input_file_id: str, metadata: dict[str, str] | None = None) -> dict[str, Any]:
        """Create a batch over an uploaded request file (its lines are answered now, shown when done)."""
        with self._lock:
            self.calls["create"] += 1
            lines = [json.loads(x) for x in self.content(input_file_id).splitlines() if x.strip()]
            self.calls["content"] -= 1  # reading its own file is no API call
            good, bad, seconds = answer_lines(self.engine, lines, self.faults)
            created = self.now()
            turnaround = self.turnaround if self.turnaround is not None else \
                QUEUE_SECONDS + seconds / PARALLEL_REQUESTS / self.engine.profile.speed
            batch: dict[str, Any] = {"id": f"batch_{uuid.uuid4().hex[:24]}", "object": "batch", "endpoint": ENDPOINT,
                     "input_file_id": input_file_id, "completion_window": "24h", "status": "in_progress",
                     "created_at": int(created), "output_file_id": None, "error_file_id": None, "errors": None,
                     "request_counts": {"total": len(lines), "completed": 0, "failed": 0},
                     "metadata": metadata or None, "_done_at": created + turnaround, "_good": good, "_bad": bad}
            if self.faults.fail_batch:
                batch["_fail"] = True
            self.batches[batch["id"]] = batch
            self._save()
            return _public(batch)

    def retrieve_batch(self, batch_id: str) -> dict[str, Any]:
        """The batch now: in progress until its turnaround has passed, then completed (or expired,
        or failed), its output and error files written once."""
        with self._lock:
            self.calls["retrieve"] += 1
            batch = self._batch(batch_id)
            if batch["status"] == "in_progress" and self.now() >= batch["_done_at"]:
                self._finish(batch)
                self._save()
            return _public(batch)

    def retrieve(self, batch_id: str) -> BatchInfo:
        return BatchInfo.from_openai(self.retrieve_batch(batch_id))

    def _finish(self, batch: dict[str, Any]) -> None:
        if batch.get("_fail"):
            batch["status"] = "failed"
            batch["errors"] = {"object": "list", "data": [{"code": "invalid_request", "message": "emulated failure"}]}
            return
        good, bad = batch.pop("_good"), batch.pop("_bad")
        batch["status"] = "expired" if self.faults.expire else "completed"
        batch["request_counts"].update(completed=len(good), failed=len(bad))
        if good:
            output = "\n".join(good).encode() + b"\n"
            batch["output_file_id"] = self._store("output.jsonl", output, "batch_output")["id"]
        if bad:
            errors = "\n".join(bad).encode() + b"\n"
            batch["error_file_id"] = self._store("errors.jsonl", errors, "batch_output")["id"]

    def cancel_batch(self, batch_id: str) -> dict[str, Any]:
        with self._lock:
            batch = self._batch(batch_id)
            if batch["status"] == "in_progress":
                batch["status"] = "cancelled"
                self._save()
            return _public(batch)

    def _batch(self, batch_id: str) -> dict[str, Any]:
        if batch_id not in self.batches:
            raise NotAtProvider(batch_id)
        return self.batches[batch_id]


def answer_lines(engine: Any, lines: list[dict[str, Any]], faults: LineFaults) -> tuple[list[str], list[str], float]:
    """Output and error lines for a batch's request ``lines`` (``faults`` applied), and their
    sequential seconds on ``engine``'s profile."""
    good: list[str] = []
    bad: list[str] = []
    seconds, f = 0.0, faults
    half = len(lines) // 2 if f.expire else len(lines)
    for n, line in enumerate(lines, 1):
        cid, rid = line.get("custom_id"), f"batch_req_{uuid.uuid4().hex[:16]}"
        if n > half or (f.fail_every and n % f.fail_every == 0):
            code = "batch_expired" if n > half else "server_error"
            bad.append(json.dumps({"id": rid, "custom_id": cid, "response": None,
                                   "error": {"code": code, "message": f"{code} (emulated)"}}))
            continue
        body = answer(engine, line["body"])
        if f.cut_every and n % f.cut_every == 0:
            choice = body["choices"][0]
            choice["message"]["content"] = choice["message"]["content"][: len(choice["message"]["content"]) // 2]
            choice["finish_reason"] = "length"
        usage = body["usage"]
        profile = engine.profile
        seconds += profile.call_seconds(usage["prompt_tokens"], usage["completion_tokens"]) * profile.speed
        if f.poison_every and n % f.poison_every == 0:
            good.append(poison_line(n // f.poison_every - 1, cid, rid, body))
            continue
        good.append(json.dumps({"id": rid, "custom_id": cid,
                                "response": {"status_code": 200, "request_id": rid, "body": body}, "error": None}))
    return good, bad, seconds


def _pages(provider: EmulatedBatches) -> Iterator[list[dict[str, Any]]]:
    """``provider``'s batches a page at a time, newest first, as a client pages through them."""
    after = None
    while True:
        page = provider.list_batches(after, 100)
        yield page["data"]
        if not page["has_more"]:
            return
        after = page["last_id"]


def _public(batch: dict[str, Any]) -> dict[str, Any]:
    """The batch object as the API shows it (without the emulator's own keys)."""
    return {k: v for k, v in batch.items() if not k.startswith("_")}


def emulated_provider(resolved: Any, faults: LineFaults | None = None,
                      turnaround: float | None = None) -> EmulatedBatches:
    """The in-process batch provider of an emulated LM (``emulated:PROFILE``), on a virtual clock."""
    return EmulatedBatches(resolved.engine, faults=faults, turnaround=turnaround)


def _text(content: Any) -> str:
    """A Messages API content (a string or blocks) as text."""
    if isinstance(content, str):
        return content
    return "".join(b.get("text", "") for b in content if isinstance(b, dict))


def answer_message(engine: Any, params: dict[str, Any]) -> dict[str, Any]:
    """An Anthropic message answering ``params`` (Messages API) from the emulated provider's
    extractor, as :func:`answer` answers a chat completion."""
    messages = [{"role": m["role"], "content": _text(m["content"])} for m in params["messages"]]
    if params.get("system"):
        messages.insert(0, {"role": "system", "content": _text(params["system"])})
    schema = ((params.get("output_config") or {}).get("format") or params.get("output_format") or {}).get("schema")
    response_format = {"type": "json_schema", "json_schema": {"schema": schema}} if schema else None
    body = answer(engine, {"model": params.get("model"), "messages": messages, "max_tokens": params.get("max_tokens"),
                           "response_format": response_format})
    choice, usage = body["choices"][0], body["usage"]
    return {"id": f"msg_{uuid.uuid4().hex[:24]}", "type": "message", "role": "assistant", "model": params.get("model"),
            "content": [{"type": "text", "text": choice["message"]["content"]}], "stop_sequence": None,
            "stop_reason": "max_tokens" if choice["finish_reason"] == "length" else "end_turn",
            "usage": {"input_tokens": usage["prompt_tokens"], "output_tokens": usage["completion_tokens"],
                      "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}}


class EmulatedMessageBatches(EmulatedBatches):
    """:class:`EmulatedBatches` that also answers Anthropic's Message Batches: ``create_message_batch``
    (requests inline), ``retrieve_message_batch``, ``message_batch_results`` (JSONL) and
    ``list_message_batches``, with the same clock, state and :class:`LineFaults` (a failed line is
    ``errored``, an expired batch's second half ``expired``, a poison line cut mid-way)."""

    def create_message_batch(self, requests: list[dict[str, Any]]) -> dict[str, Any]:
        with self._lock:
            self.calls["create"] += 1
            lines, seconds, f = [], 0.0, self.faults
            half = len(requests) // 2 if f.expire else len(requests)
            for n, request in enumerate(requests, 1):
                result: dict[str, Any] = {"type": "expired"} if n > half else {"type": "errored", "error": {
                    "type": "error", "error": {"type": "api_error", "message": "api_error (emulated)"}}}
                if n <= half and not f.fail_batch and not (f.fail_every and n % f.fail_every == 0):
                    message = answer_message(self.engine, request["params"])
                    if f.cut_every and n % f.cut_every == 0:
                        block = message["content"][0]
                        block["text"], message["stop_reason"] = block["text"][: len(block["text"]) // 2], "max_tokens"
                    usage = message["usage"]
                    seconds += self.engine.profile.call_seconds(usage["input_tokens"], usage["output_tokens"]) \
                        * self.engine.profile.speed
                    result = {"type": "succeeded", "message": message}
                line = json.dumps({"custom_id": request.get("custom_id"), "result": result})
                lines.append(line[:50] if f.poison_every and n % f.poison_every == 0 else line)
            created = self.now()
            turnaround = self.turnaround if self.turnaround is not None else \
                QUEUE_SECONDS + seconds / PARALLEL_REQUESTS / self.engine.profile.speed
            batch: dict[str, Any] = {"id": f"msgbatch_{uuid.uuid4().hex[:24]}", "type": "message_batch",
                     "processing_status": "in_progress", "request_counts": {k: 0 for k in COUNTS},
                     "ended_at": None, "created_at": _stamp(created), "expires_at": _stamp(created + 86400),
                     "archived_at": None, "cancel_initiated_at": None, "results_url": None,
                     "_done_at": created + turnaround, "_results": lines}
            batch["request_counts"]["processing"] = len(requests)
            self.batches[batch["id"]] = batch
            self._save()
            return _public(batch)

    def retrieve_message_batch(self, batch_id: str) -> dict[str, Any]:
        """The batch now: ``in_progress`` until its turnaround has passed, then ``ended``."""
        with self._lock:
            self.calls["retrieve"] += 1
            batch = self._batch(batch_id)
            if batch["processing_status"] == "in_progress" and self.now() >= batch["_done_at"]:
                kinds = Counter(json.loads(x)["result"]["type"] if x.endswith("}") else "errored"
                                for x in batch["_results"])
                batch["request_counts"] = {k: kinds.get(k, 0) for k in COUNTS}
                batch.update(processing_status="ended", ended_at=_stamp(self.now()),
                             results_url=f"/v1/messages/batches/{batch_id}/results")
                self._save()
            return _public(batch)

    def message_batch_results(self, batch_id: str) -> bytes:
        with self._lock:
            self.calls["content"] += 1
            batch = self._batch(batch_id)
            if batch["processing_status"] != "ended":
                raise ValueError(f"batch {batch_id} has not ended")
            return "\n".join(batch["_results"]).encode() + b"\n"

    def list_message_batches(self, after_id: str | None = None, limit: int = 20) -> dict[str, Any]:
        with self._lock:
            ids = [i for i in reversed(self.batches) if self.batches[i].get("type") == "message_batch"]
            start = ids.index(after_id) + 1 if after_id in ids else 0
            page = [_public(self.batches[i]) for i in ids[start:start + max(1, min(limit, 1000))]]
            return {"data": page, "has_more": start + len(page) < len(ids),
                    "first_id": page[0]["id"] if page else None, "last_id": page[-1]["id"] if page else None}


def _stamp(seconds: float) -> str:
    """An RFC 3339 time, as Anthropic writes them."""
    from datetime import datetime

    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")
