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
from typing import Any

from toolkit.core import Prices, redact, resolve_prices, split_userinfo
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
from toolkit.extraction import ExtractionSettings
from toolkit.jobs._intake import Decision, Intake
from toolkit.jobs._progress import DocumentBar
from toolkit.jobs._runners import Chunk, ChunkResult, LocalRunner, Runner
from toolkit.jobs._service import ExtractionService, default_policy
from toolkit.jobs._summary import run_summary
from toolkit.lm import ResolvedLM
from toolkit.packing import STRATEGIES, PackingSettings, get_counter
from toolkit.store import MAX_RUN_CHARS, LeaseKeeper, Store, open_store

DEFAULT_CORPUS = "pubmed-sample"
MODES = ("sync", "batch-api")


@dataclass(frozen=True)
class RunSettings:
    """Everything that shapes a run; recorded in the store with it."""

    token_budget: int = 8192
    max_docs: int = 10
    strategy: str = "fifo"
    concurrency: str | None = None  # default: 1 on the local model, auto:16 elsewhere
    extraction: ExtractionSettings = field(default_factory=ExtractionSettings)
    chunk_docs: int = 1000  # documents read, packed and run at a time
    strict: bool = False  # bad input stops the run instead of becoming failed documents
    price: str | None = None  # price the tokens as this model (LiteLLM's price map) or price file; default: the LM's own
    mode: str = "sync"  # sync: calls as they go; batch-api: the provider's batch API (toolkit.jobs.batchapi)
    rpm: int | None = None  # the account's requests per minute (default: the backend's, or learned from replies)
    tpm: int | None = None  # the account's tokens per minute (prompt plus max_tokens, as providers count them)

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if self.chunk_docs < 1:
            raise ValueError("chunk_docs must be >= 1")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        for name in ("rpm", "tpm"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a whole number >= 1, got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class _Doc:
    """A document's outcome as the store wants it."""

    id: str
    status: str
    reason: str | None = None
    entities: list = field(default_factory=list)
    relationships: list = field(default_factory=list)
    token_count: int | None = None
    source: str | None = None
    digest: str | None = None  # sha256 of the document's text


@dataclass
class RunResult:
    """A finished (or stopped) run: its summary, and its rows in the store as polars frames."""

    run_id: str
    summary: dict[str, Any]
    store: Store

    @property
    def documents(self):  # -> polars.DataFrame
        import polars as pl

        rows = self.store.documents(self.run_id)
        return pl.DataFrame(rows) if rows else pl.DataFrame(schema={"doc_id": pl.Utf8, "status": pl.Utf8})

    @property
    def entities(self):
        import polars as pl

        rows = [dataclasses.asdict(e) for e in self.store.entities(self.run_id)]
        return pl.DataFrame(rows) if rows else pl.DataFrame(schema={"text": pl.Utf8, "type": pl.Utf8,
                                                                    "source_document_id": pl.Utf8})

    @property
    def dropped(self):
        """Mentions validation did not keep: leaks (``found_in``: the document they are in) and
        ungrounded text, per document."""
        import polars as pl

        rows = [dataclasses.asdict(d) for d in self.store.dropped(self.run_id)]
        return pl.DataFrame(rows) if rows else pl.DataFrame(schema={"text": pl.Utf8, "type": pl.Utf8,
                                                                    "source_document_id": pl.Utf8, "why": pl.Utf8,
                                                                    "found_in": pl.Utf8})

    @property
    def attempts(self):
        import polars as pl

        rows = self.store.attempts(self.run_id)
        return pl.DataFrame(rows, infer_schema_length=None) if rows else pl.DataFrame()


def _latest_run(db: Store, corpus: str) -> str:
    """The most recent run of ``corpus`` in ``db`` (what ``--resume`` without a name resumes)."""
    import json

    runs = [r for r in db.runs() if json.loads(db.get_run(r["run_id"])["settings"] or "{}").get("corpus") == corpus]
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
            raise CorpusError(decision.reason.removeprefix("bad input: "))


def run(corpus: str | Path = DEFAULT_CORPUS, *, lm: str | ResolvedLM = "local", settings: RunSettings | None = None,
        store: str | Store | None = None, run_name: str | None = None, resume: bool = False,
        limit: int | None = None, api_base: str | None = None,
        progress: bool | Callable[[dict[str, Any]], None] | None = None, fmt: str | None = None,
        stop: threading.Event | None = None, engine: str = "local", workers: int = 2,
        ray_address: str | None = None, batch: Any = None) -> RunResult:
    """Extract ``corpus`` into ``store`` (see the module docstring). ``progress``: None/True shows a
    bar, False nothing, a callable receives the running tally after every document. ``fmt``: the
    corpus's format when its name does not tell (a pipe). ``stop``: once set (from another thread:
    a notebook's Stop button), the run stops as Ctrl-C stops it, resumable. ``engine``: ``local``
    (this process) or ``ray`` (``workers`` Ray workers; ``ray_address``: an existing cluster, else
    a local Ray is started; see :mod:`toolkit.jobs.scaleout`). ``settings.mode`` ``batch-api`` sends the
    packed batches through the provider's batch API instead (:mod:`toolkit.jobs.batchapi`; ``batch``: its
    :class:`~toolkit.jobs.batchapi.BatchApiSettings`); a resumed run polls the batches it already sent. Everything a user can get wrong (corpus,
    store, LM, settings, a run owned by another process) raises before the run is written."""
    settings = settings or RunSettings()
    corpus, engine_name = str(corpus), engine
    check_run_name(run_name)
    ensure_fetched(corpus)
    path, fmt = resolve(corpus, fmt)
    if settings.strict and is_stream(path):
        raise CorpusError(f"--strict checks the whole input before the first call, which reads it twice: "
                          f"{path} is a pipe; write it to a file first")
    if api_base:
        try:
            split_userinfo(api_base)  # a password that breaks the URL is refused, never quoted
        except ValueError as exc:
            raise ValueError(f"--api-base: {exc}") from None
    service = ExtractionService(lm, settings.extraction, api_base=api_base)
    prices = resolve_prices(service.resolved.priced_as, settings.price)  # an unknown price is refused here
    db = open_store(store) if store is None or isinstance(store, str) else store
    if settings.concurrency is not None or settings.rpm or settings.tpm:
        service.policy = default_policy(service.resolved, settings.concurrency, settings.rpm, settings.tpm)
    packing = service.packing_settings(settings.token_budget, max_docs=settings.max_docs, strategy=settings.strategy)
    tpm = service.policy.rate.tokens_per_minute
    if tpm is not None and packing.token_budget > tpm:
        raise ValueError(f"the token budget ({packing.token_budget}) is above {service.resolved.spec}'s limit of "
                         f"{tpm} tokens per minute: a full batch could never be sent; lower --budget")
    room = packing.token_budget - packing.prompt_tokens - packing.doc_overhead_tokens - packing.output_tokens_per_doc
    counter = get_counter(packing.model)

    def intake(done: dict[str, str | None]) -> Intake:
        return Intake(corpus, counter.count, room, packing.token_budget, done)

    if settings.strict:
        _validate(selected_records(iter_records(path, fmt), corpus, limit), intake({}))
    if resume and run_name is None:
        run_name = _latest_run(db, corpus)
    run_id = run_name or new_run_id()
    stop = stop or threading.Event()
    # every option is checked, and the engine built, before the run is written
    if settings.mode == "batch-api":
        if engine_name != "local":
            raise ValueError("--mode batch-api runs on the local engine: the provider does the work")
        from toolkit.jobs.batchapi import BatchApiRunner, batch_provider

        engine = BatchApiRunner(service, db, run_id, batch_provider(service.resolved, api_base), batch,
                                progress=progress is None or progress is True, stop=stop)
    else:
        if db.batch_jobs(run_id, open_only=True):  # their answers would come back to nobody and be paid twice
            raise ValueError(f"run {run_id!r} has batches still open at the provider: resume it with --mode batch-api")
        engine = open_engine(engine_name, service, workers, ray_address, run_id, stop)
    records = iter_records(path, fmt)
    try:
        existed = db.start_run(run_id, service.resolved.spec, service.resolved.model_id,
                               {"corpus": corpus, "limit": limit, **settings.to_dict()})
    except BaseException:
        engine.close()
        raise
    try:
        with LeaseKeeper(db, run_id) as heartbeat:
            gate = intake(db.digests(run_id) if existed else {})
            return _execute(selected_records(records, corpus, limit), gate, service, engine, packing, settings, db, run_id,
                            progress, expected_total(corpus, path, fmt, limit), heartbeat, stop, prices)
    except Exception as exc:
        _abandon(db, run_id, exc)
        raise RunFailed(f"run {run_id!r} stopped: {type(exc).__name__}: {exc}") from exc
    except BaseException as exc:
        _abandon(db, run_id, exc)
        raise


def open_engine(name: str, service: ExtractionService, workers: int, address: str | None, run_id: str,
                stop: threading.Event | None = None) -> Runner:
    """The engine ``name`` runs chunks on (``ray`` needs the ``ray`` extra)."""
    if name == "local":
        return LocalRunner(service, stop)
    if name == "ray":
        from toolkit.jobs.scaleout import RayRunner

        return RayRunner(service, workers=workers, address=address, run_id=run_id, stop=stop)
    raise ValueError(f"unknown engine {name!r}: local or ray")


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


def _execute(records: Iterator[Record], gate: Intake, service: ExtractionService, engine: Runner,
             packing: PackingSettings, settings: RunSettings, db: Store, run_id: str,
             progress: bool | Callable[[dict[str, Any]], None] | None, total: int | None, heartbeat: LeaseKeeper,
             stop: threading.Event, prices: Prices | None) -> RunResult:
    """The run itself: records through the intake, chunks through the engine, outcomes into the store
    (its tokens priced at ``prices``)."""
    expected: set[str] = set()
    runs: list[ChunkResult] = []
    start = time.perf_counter()
    bar = DocumentBar(progress, total, lambda: engine.failed_calls)

    def decided(outcome: DocumentOutcome | _Doc) -> None:
        heartbeat.check()
        db.save_documents(run_id, [outcome])
        bar.update(outcome)

    def record(attempts: Sequence[AttemptRecord]) -> None:
        db.save_attempts(run_id, attempts)

    def collect(results: Iterator[ChunkResult]) -> str | None:
        for result in results:
            runs.append(result)
            if result.stopped:
                return result.stopped
        return None

    def submit(chunk: list[Decision]) -> str | None:
        db.mark_pending(run_id, [(d.id, d.tokens, None, d.digest) for d in chunk])
        return collect(engine.submit(Chunk([d.document for d in chunk], [d.tokens for d in chunk], packing),
                                     decided, record))

    chunk: list[Decision] = []
    size = engine.chunk_docs or settings.chunk_docs
    stopped: str | None = None
    damaged: str | None = None
    try:
        try:
            for item in records:
                decision = gate.decide(item)
                if decision.verdict == "reject":
                    expected.add(decision.id)
                    decided(_Doc(decision.id, "failed", decision.reason, token_count=decision.tokens,
                                 source=decision.source, digest=decision.digest))
                elif decision.verdict == "done":
                    bar.skip()
                elif decision.verdict == "run":
                    expected.add(decision.id)
                    chunk.append(decision)
                    if len(chunk) >= size:
                        stopped, chunk = submit(chunk), []
                if stopped or stop.is_set():
                    break
        except CorpusDamaged as exc:
            damaged = str(exc)
        if stop.is_set() and not stopped:  # the documents read stay pending; calls in flight finish
            db.mark_pending(run_id, [(d.id, d.tokens, None, d.digest) for d in chunk])
            chunk = []
        if chunk and not stopped:
            stopped = submit(chunk)
        if not stopped:
            stopped = collect(engine.drain(decided, record))
        if stop.is_set() and not stopped:
            stopped = STOP_REQUESTED
    except KeyboardInterrupt:
        stopped = "interrupted (Ctrl-C): unfinished documents stay pending; resume with the same run name"
    except StopRequested as exc:
        stopped = str(exc)
    finally:
        bar.close()
        engine.close()
    if damaged and not stopped:
        stopped = f"input damaged: {damaged}; the documents before the damage are done, fix the file and resume"
    wall = time.perf_counter() - start
    summary = run_summary(run_id, db, gate, expected, runs, wall, service.resolved, stopped, prices, engine)
    summary["input_error"] = damaged
    db.finish_run(run_id, "stopped" if stopped else "finished", summary)
    return RunResult(run_id, summary, db)
