"""The main job: corpus in, entities in a store; streamed, resumable, every document accounted for.

``run(corpus, lm=..., settings=..., store=...)`` reads the corpus in chunks (constant memory),
packs each chunk, runs it through the executor and the DSPy module, and writes every document's
outcome to the store as soon as it is decided. A run is named (``run_name``); running a name
again resumes it: documents already extracted are skipped, pending and failed ones are retried.
Bad input (malformed lines, missing or duplicate ids, empty or non-text content, invalid UTF-8,
documents far larger than the budget) becomes a failed document with its file, line and reason
(:mod:`toolkit.jobs._intake`), or, with ``strict``, stops the run before any call (the whole input is
checked first). A damaged stream ends the run after the documents read before the damage. A run is
owned by one process at a time (a lease in the store); a run that ends by an exception is marked
failed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from toolkit.core import Entity, Relationship, redact, resolve_prices, split_userinfo
from toolkit.corpora import (
    CorpusDamaged,
    CorpusError,
    Record,
    ensure_fetched,
    expected_total,
    is_stream,
    iter_records,
    key_problem,
    resolve,
    selected_records,
)
from toolkit.execution import STOP_REQUESTED, AttemptRecord, DocumentOutcome, RunFailed, StopRequested
from toolkit.jobs._context import Progress, RunContext
from toolkit.jobs._intake import Decision, Intake
from toolkit.jobs._progress import DocumentBar
from toolkit.jobs._runners import Chunk, ChunkResult, LocalRunner, Runner
from toolkit.jobs._service import ExtractionService, default_policy
from toolkit.jobs._settings import DEFAULT_CORPUS, RunSettings
from toolkit.jobs._summary import RunSummary, run_summary
from toolkit.lm import ResolvedLM, resolve_lm
from toolkit.packing import PackingSettings, get_counter
from toolkit.store import MAX_RUN_CHARS, LeaseKeeper, Store, open_store

if TYPE_CHECKING:
    import polars as pl


@dataclass
class _Doc:
    """A document's outcome as the store wants it."""

    id: str
    status: str
    reason: str | None = None
    entities: list[Entity] = field(default_factory=list)
    relationships: list[Relationship] = field(default_factory=list)
    token_count: int | None = None
    source: str | None = None
    digest: str | None = None  # sha256 of the document's text


@dataclass
class RunResult:
    """A finished (or stopped) run: its summary, and its rows in the store as polars frames."""

    run_id: str
    summary: RunSummary
    store: Store

    @property
    def documents(self) -> pl.DataFrame:
        import polars as pl

        rows = self.store.documents(self.run_id)
        return pl.DataFrame(rows) if rows else pl.DataFrame(schema={"doc_id": pl.Utf8, "status": pl.Utf8})

    @property
    def entities(self) -> pl.DataFrame:
        import polars as pl

        rows = [dataclasses.asdict(e) for e in self.store.entities(self.run_id)]
        return pl.DataFrame(rows) if rows else pl.DataFrame(schema={"text": pl.Utf8, "type": pl.Utf8,
                                                                    "source_document_id": pl.Utf8})

    @property
    def dropped(self) -> pl.DataFrame:
        """Mentions validation did not keep: leaks (``found_in``: the document they are in) and
        ungrounded text, per document."""
        import polars as pl

        rows = [dataclasses.asdict(d) for d in self.store.dropped(self.run_id)]
        return pl.DataFrame(rows) if rows else pl.DataFrame(schema={"text": pl.Utf8, "type": pl.Utf8,
                                                                    "source_document_id": pl.Utf8, "why": pl.Utf8,
                                                                    "found_in": pl.Utf8})

    @property
    def attempts(self) -> pl.DataFrame:
        import polars as pl

        rows = self.store.attempts(self.run_id)
        return pl.DataFrame(rows, infer_schema_length=None) if rows else pl.DataFrame()


def _latest_run(db: Store, corpus: str) -> str:
    """The most recent run of ``corpus`` in ``db`` (what ``--resume`` without a name resumes)."""
    import json

    def corpus_of(run_id: str) -> str | None:
        stored = db.get_run(run_id)
        return json.loads((stored or {}).get("settings") or "{}").get("corpus")

    runs = [r for r in db.runs() if corpus_of(r["run_id"]) == corpus]
    if not runs:
        raise ValueError(f"nothing to resume: no run of {corpus!r} in {db.url}")
    return max(runs, key=lambda r: (r["started"] or "", r["run_id"]))["run_id"]


def new_run_id() -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return f"run-{stamp}-{hashlib.sha1(str(time.perf_counter_ns()).encode()).hexdigest()[:6]}"


def check_run_name(name: str | None) -> None:
    """A run name the store can hold: at most :data:`MAX_RUN_CHARS` characters, no control characters."""
    if name is None:
        return
    if not name or len(name) > MAX_RUN_CHARS:
        raise ValueError(f"a run name has 1 to {MAX_RUN_CHARS} characters, got {len(name)}")
    if problem := key_problem(name):
        raise ValueError(f"run name {name!r} has {problem}")


def _validate(records: Iterator[Record], intake: Intake) -> None:
    """The strict pre-pass: the whole input checked, streaming, before any call."""
    for item in records:
        decision = intake.decide(item)
        if decision.verdict == "reject":
            raise CorpusError((decision.reason or "").removeprefix("bad input: "))  # a rejection has its reason


def run(corpus: str | Path = DEFAULT_CORPUS, *, lm: str | ResolvedLM = "local", store: str | Store | None = None,
        settings: RunSettings | None = None, run_name: str | None = None, resume: bool = False,
        limit: int | None = None, progress: Progress = None, stop: threading.Event | None = None,
        fmt: str | None = None) -> RunResult:
    """Extract ``corpus`` with ``lm`` into ``store`` (default ``sqlite:///batchx.db``) under
    ``settings`` (default :class:`RunSettings`), as run ``run_name`` (see the module docstring).
    ``progress``: None/True shows a bar, False nothing, a callable receives the running tally after
    every document. ``fmt``: the corpus's format when its name does not tell (a pipe). ``stop``: once
    set (from another thread: a notebook's Stop button), the run stops as Ctrl-C stops it, resumable.
    Where the chunks run is ``settings.runner``: ``local`` (this process) or ``ray``
    (``settings.workers`` Ray workers at ``settings.ray_address``, else a local Ray; see
    :mod:`toolkit.jobs.scaleout`); ``settings.mode`` ``batch-api`` sends the packed batches through the
    provider's batch API instead (:mod:`toolkit.jobs.batchapi`, under ``settings.batch_api``); a
    resumed run polls the batches it already sent. Everything a user can get wrong (corpus, store,
    LM, settings, a run owned by another process) raises before the run is written."""
    settings = settings or RunSettings()
    corpus = str(corpus)
    check_run_name(run_name)
    ensure_fetched(corpus)
    path, fmt = resolve(corpus, fmt)
    if settings.strict and is_stream(path):
        raise CorpusError(f"--strict checks the whole input before the first call, which reads it twice: "
                          f"{path} is a pipe; write it to a file first")
    service = _service(lm, settings)
    prices = resolve_prices(service.resolved.priced_as, settings.price)  # an unknown price is refused here
    db = open_store(store) if store is None or isinstance(store, str) else store
    packing = _packing(service, settings)
    intake = _intake(corpus, packing)
    if settings.strict:
        _validate(selected_records(iter_records(path, fmt), corpus, limit), intake({}))
    if resume and run_name is None:
        run_name = _latest_run(db, corpus)
    run_id = run_name or new_run_id()
    stop = stop or threading.Event()
    # every option is checked, and the runner built, before the run is written
    runner = open_runner(settings, service, db, run_id, stop, bar=progress is None or progress is True)
    records = iter_records(path, fmt)
    try:
        existed = db.start_run(run_id, service.resolved.spec, service.resolved.model_id,
                               {"corpus": corpus, "limit": limit, **settings.to_dict()})
    except BaseException:
        runner.close()
        raise
    try:
        with LeaseKeeper(db, run_id) as heartbeat:
            gate = intake(db.digests(run_id) if existed else {})
            job = RunContext(run_id, db, service, runner, packing, settings, gate, heartbeat, stop, prices, progress,
                             expected_total(corpus, path, fmt, limit))
            return _execute(selected_records(records, corpus, limit), job)
    except Exception as exc:
        _abandon(db, run_id, exc)
        raise RunFailed(f"run {run_id!r} stopped: {type(exc).__name__}: {exc}") from exc
    except BaseException as exc:
        _abandon(db, run_id, exc)
        raise


def _service(lm: str | ResolvedLM, settings: RunSettings) -> ExtractionService:
    """The run's extraction service: its LM (at ``settings.api_base``) and its policy (the
    backend's, with the concurrency and limits ``settings`` say)."""
    if settings.api_base:
        try:
            split_userinfo(settings.api_base)  # a password that breaks the URL is refused, never quoted
        except ValueError as exc:
            raise ValueError(f"--api-base: {exc}") from None
    resolved = lm if isinstance(lm, ResolvedLM) else resolve_lm(lm, api_base=settings.api_base)
    policy = default_policy(resolved, settings.concurrency, settings.rpm, settings.tpm)
    return ExtractionService(resolved, settings.extraction, policy=policy, api_base=settings.api_base)


def _packing(service: ExtractionService, settings: RunSettings) -> PackingSettings:
    """The run's packing, with the reserves measured for its LM; a budget above the LM's tokens per
    minute is refused (a full batch could never be sent)."""
    packing = service.packing_settings(settings.token_budget, max_docs=settings.max_docs, strategy=settings.strategy)
    tpm = service.policy.rate.tokens_per_minute
    if tpm is not None and packing.token_budget > tpm:
        raise ValueError(f"the token budget ({packing.token_budget}) is above {service.resolved.spec}'s limit of "
                         f"{tpm} tokens per minute: a full batch could never be sent; lower --budget")
    return packing


def _intake(corpus: str, packing: PackingSettings) -> Callable[[dict[str, str | None]], Intake]:
    """The intake of ``corpus`` given the digests of the documents already done."""
    room = packing.token_budget - packing.prompt_tokens - packing.doc_overhead_tokens - packing.output_tokens_per_doc
    counter = get_counter(packing.model)

    def intake(done: dict[str, str | None]) -> Intake:
        return Intake(corpus, counter.count, room, packing.token_budget, done)

    return intake


def open_runner(settings: RunSettings, service: ExtractionService, db: Store, run_id: str,
                stop: threading.Event | None = None, bar: bool = False) -> Runner:
    """The runner of ``settings``: the batch API's in ``batch-api`` mode (``bar``: its polling bar),
    else ``settings.runner``'s (``ray`` needs the ``ray`` extra)."""
    if settings.mode == "batch-api":
        from toolkit.jobs.batchapi import BatchApiRunner, batch_provider

        provider = batch_provider(service.resolved, settings.api_base)
        return BatchApiRunner(service, db, run_id, provider, settings.batch_api, progress=bar, stop=stop)
    if db.batch_jobs(run_id, open_only=True):  # their answers would come back to nobody and be paid twice
        raise ValueError(f"run {run_id!r} has batches still open at the provider: resume it with --mode batch-api")
    if settings.runner == "ray":
        from toolkit.jobs.scaleout import RayRunner

        return RayRunner(service, workers=settings.workers, address=settings.ray_address, run_id=run_id, stop=stop)
    return LocalRunner(service, stop)


def _abandon(db: Store, run_id: str, exc: BaseException, waits: tuple[float, ...] = (0.5, 1, 2, 4)) -> None:
    """Mark a run that ended by an exception as failed. The store may be what failed (locked by
    another process): tried again for a few seconds; after that its lease expires and the run
    shows as abandoned."""
    for wait in (0.0, *waits):
        time.sleep(wait)
        try:
            db.finish_run(run_id, "failed", {"run": run_id, "error": f"{type(exc).__name__}: {exc}"})
            return
        except Exception as second:  # noqa: BLE001 - reported below if it never succeeds
            error = second
    print(f"warning: could not mark run {run_id!r} failed: {redact(str(error))}", file=sys.stderr)


class _Feed:
    """Records through the intake, chunks through the runner, every outcome into the store as soon
    as it is decided (the documents it read: ``expected``; what each chunk did: ``runs``)."""

    def __init__(self, job: RunContext) -> None:
        self.job = job
        self.expected: set[str] = set()
        self.runs: list[ChunkResult] = []
        self.chunk: list[Decision] = []
        self.size = job.runner.chunk_docs or job.settings.chunk_docs
        self.bar = DocumentBar(job.progress, job.total, lambda: job.runner.failed_calls)

    def decided(self, outcome: DocumentOutcome | _Doc) -> None:
        self.job.heartbeat.check()
        self.job.db.save_documents(self.job.run_id, [outcome])
        self.bar.update(outcome)

    def record(self, attempts: Sequence[AttemptRecord]) -> None:
        self.job.db.save_attempts(self.job.run_id, attempts)

    def collect(self, results: Iterator[ChunkResult]) -> str | None:
        for result in results:
            self.runs.append(result)
            if result.stopped:
                return result.stopped
        return None

    def pend(self) -> list[Decision]:
        """The chunk read so far, marked pending in the store (and taken: a new chunk begins)."""
        chunk, self.chunk = self.chunk, []
        self.job.db.mark_pending(self.job.run_id, [(d.id, d.tokens, None, d.digest) for d in chunk])
        return chunk

    def submit(self) -> str | None:
        chunk = self.pend()
        runnable = [d.runnable() for d in chunk]
        work = Chunk([doc for doc, _ in runnable], [tokens for _, tokens in runnable], self.job.packing)
        return self.collect(self.job.runner.submit(work, self.decided, self.record))

    def read(self, records: Iterator[Record]) -> tuple[str | None, str | None]:
        """Every record decided: failed, skipped (done before) or into a chunk, each full chunk
        submitted; (why the run stopped, what damaged the input), each None if nothing did."""
        stopped: str | None = None
        try:
            for item in records:
                decision = self.job.gate.decide(item)
                if decision.verdict == "reject":
                    self.expected.add(decision.id)
                    self.decided(_Doc(decision.id, "failed", decision.reason, token_count=decision.tokens,
                                      source=decision.source, digest=decision.digest))
                elif decision.verdict == "done":
                    self.bar.skip()
                elif decision.verdict == "run":
                    self.expected.add(decision.id)
                    self.chunk.append(decision)
                    if len(self.chunk) >= self.size:
                        stopped = self.submit()
                if stopped or self.job.stop.is_set():
                    break
        except CorpusDamaged as exc:
            return stopped, str(exc)
        return stopped, None

    def finish(self, stopped: str | None) -> str | None:
        """The last chunk submitted and the runner drained (unless stopped: then the documents read
        stay pending, calls in flight finish); why the run stopped."""
        stop = self.job.stop
        if stop.is_set() and not stopped:
            self.pend()
        if self.chunk and not stopped:
            stopped = self.submit()
        if not stopped:
            stopped = self.collect(self.job.runner.drain(self.decided, self.record))
        if stop.is_set() and not stopped:
            stopped = STOP_REQUESTED
        return stopped


def _execute(records: Iterator[Record], job: RunContext) -> RunResult:
    """The run itself (see :class:`_Feed`), then its summary, written with its status."""
    feed = _Feed(job)
    start = time.perf_counter()
    stopped: str | None = None
    damaged: str | None = None
    try:
        stopped, damaged = feed.read(records)
        stopped = feed.finish(stopped)
    except KeyboardInterrupt:
        stopped = "interrupted (Ctrl-C): unfinished documents stay pending; resume with the same run name"
    except StopRequested as exc:
        stopped = str(exc)
    finally:
        feed.bar.close()
        job.runner.close()
    if damaged and not stopped:
        stopped = f"input damaged: {damaged}; the documents before the damage are done, fix the file and resume"
    summary = run_summary(job, feed.expected, feed.runs, time.perf_counter() - start, stopped, damaged)
    job.db.finish_run(job.run_id, "stopped" if stopped else "finished", summary.to_json())
    return RunResult(job.run_id, summary, job.db)
