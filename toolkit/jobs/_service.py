"""Extraction as a service: pack documents, run the DSPy module through the executor, validate.

``ExtractionService(lm, settings)`` wires the pieces; ``extract_batch(documents, token_budget)``
and ``get_batch_metrics()`` are the original design's API on a default service. The packer's
reserves are measured from the module's real prompt (not guessed), and an emulated LM runs in
virtual time.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Any

import dspy

from toolkit.core import BatchExtractionResult, Counts, Document, DocumentBatch, ProcessingMetrics
from toolkit.execution import (
    AttemptRecord,
    ConcurrencyPolicy,
    DocumentOutcome,
    ExecutionPolicy,
    ExecutionReport,
    ExecutionStream,
    Executor,
    LoopHost,
    Pacing,
    ProgressFn,
    RateLimitPolicy,
    RunMetrics,
    Window,
    learn_limits,
    network_guard,
)
from toolkit.extraction import BatchExtractor, ExtractionSettings, demo_example, load_program, pass_demos, to_result
from toolkit.lm import ResolvedLM, resolve_lm
from toolkit.packing import Packer, PackingSettings, PackResult, get_counter

_PROBE_ID = "doc-0000"


def demos_for(settings: ExtractionSettings, pass_no: int = 1) -> list[dspy.Example]:
    """The demos of pass ``pass_no`` (a predictor's ``Predict.demos``): the built-in worked
    example, or ``settings.shots`` annotated documents of the gold corpus ``settings.demos`` (each
    pass its own, see :func:`toolkit.extraction.pass_demos`); none without ``settings.demo``."""
    if not settings.demo:
        return []
    if not settings.demos:
        return [demo_example(settings)]
    if settings.demo_choice == "similar":
        return []  # chosen for each call's documents (BatchExtractor._request)
    groups = pass_demos(settings.demos, settings.shots, settings.entity_types, settings.demo_choice, settings.passes)
    return [demo_example(settings, groups[pass_no - 1])]


def extractor_for(settings: ExtractionSettings, layout: str = "packed") -> BatchExtractor:
    """The DSPy module for ``settings``: its passes, each with its demos (:func:`demos_for`), or
    with what ``settings.program`` compiled for them (demos, instructions)."""
    extractor = BatchExtractor(settings, layout, demos_for(settings),
                               [demos_for(settings, n) for n in range(2, settings.passes + 1)])
    if settings.program:
        program = load_program(settings.program)
        program.check(settings.to_dict())
        extractor.load_state(dict(program.state))
    return extractor


def _probe_messages(settings: ExtractionSettings, n: int) -> list[dict[str, str]]:
    """The module's real messages for ``n`` placeholder documents."""
    extractor = extractor_for(settings)
    return extractor.messages([Document(f"{_PROBE_ID}{i}", "x") for i in range(n)])[0]


@lru_cache(maxsize=64)
def measure_reserves(settings: ExtractionSettings, model: str) -> tuple[int, int]:
    """(tokens of the module's prompt without documents, plus the fixed part of its output
    allowance; tokens each document adds besides its text), measured by formatting the real prompt
    (instructions and worked example) for batches of one and two placeholder documents."""
    counter = get_counter(model)

    def size(n: int) -> int:
        messages = _probe_messages(settings, n)
        return sum(counter.count(m["content"]) for m in messages) + 4 * len(messages)

    one, two = size(1), size(2)
    per_doc = max(1, two - one)
    return max(0, one - per_doc) + settings.max_tokens(0), per_doc


@lru_cache(maxsize=64)
def shared_prefix_tokens(settings: ExtractionSettings, model: str) -> int:
    """Tokens of the part every call's prompt begins with, byte for byte: the messages before the
    documents' (instructions, entity types, worked examples), less one for a token merged across
    the boundary. A provider's prompt cache can serve at most this much of a call with new documents."""
    messages = _probe_messages(settings, 1)
    return max(0, get_counter(model).count("".join(m["content"] + "\n" for m in messages[:-1])) - 1)


def default_policy(resolved: ResolvedLM, concurrency: str | int | None = None, rpm: int | None = None,
                   tpm: int | None = None) -> ExecutionPolicy:
    """The backend's concurrency (unless ``concurrency`` is given), rate limits and call timeout.
    ``rpm``/``tpm``: the account's limits per minute as its user says them (each replaces the
    backend's own, where it has one); limits a provider says in its replies are learned at run time."""
    caps = resolved.capabilities
    policy = ConcurrencyPolicy.parse(str(caps.concurrency if concurrency is None else concurrency))
    rate = caps.rate
    if rpm is not None or tpm is not None:
        rate = RateLimitPolicy.said(rpm or rate.requests_per_minute, tpm or rate.tokens_per_minute)
    elif rate.limited:
        # in real time a call reaches the provider a little after the client let it through; paced
        # smoothly, a run's cost per document does not depend on its length (a window's allowance
        # spent at once makes a short run look faster than the limits' rate)
        guard = rate.guard if caps.virtual_time or rate.guard else network_guard(rate.window)
        rate = dataclasses.replace(rate, guard=guard, smooth=True,
                                   source="backend" if rate.source == "none" else rate.source)
    return ExecutionPolicy(concurrency=policy, rate=rate, call_timeout=caps.call_timeout).faster(caps.time_scale)


@dataclass
class ServiceRun:
    """What one ``extract`` call did."""

    pack: PackResult | None  # None: no new batches (a run drained)
    report: ExecutionReport
    attempts: list[AttemptRecord]
    documents: int  # documents given to the run (every one must end extracted, failed or pending)
    stopped: str | None = None

    @property
    def counts(self) -> Counts:
        """The run's counts: the sum of its calls'."""
        return self.report.counts

    @property
    def batches(self) -> list[DocumentBatch]:
        """The batches the run packed (none: it only drained)."""
        return self.pack.batches if self.pack is not None else []


class ExtractionService:
    """Packs, executes and validates; keeps cumulative metrics across calls (``metrics``, fresh unless
    given). ``policy``: default :func:`default_policy`; ``pacing``: default the executor's own."""

    def __init__(self, lm: str | ResolvedLM = "local", settings: ExtractionSettings | None = None,
                 packing: PackingSettings | None = None, policy: ExecutionPolicy | None = None,
                 api_base: str | None = None, pacing: Pacing | None = None, metrics: RunMetrics | None = None) -> None:
        self.resolved = lm if isinstance(lm, ResolvedLM) else resolve_lm(lm, api_base=api_base)
        self.api_base = api_base
        self.pacing = pacing
        self.settings = settings or ExtractionSettings()
        self.layout = self.resolved.capabilities.layout(self.settings.layout)
        self.extractor = extractor_for(self.settings, self.layout)
        self.policy = policy or default_policy(self.resolved)
        self._packing = packing
        self.metrics = metrics if metrics is not None else RunMetrics()
        self._host = LoopHost()  # replaced by the run's own at its first call
        self._run: ExecutionStream | None = None
        self._sink: Callable[[DocumentOutcome], None] | None = None
        self._unsubscribe: Callable[[], None] = lambda: None
        self._limits: dict[str, Any] | None = None  # the limits its last run paced by, once it ended
        self._cut: set[str] = set()  # ids of documents whose reply was cut off by max_tokens
        self.cache_seen = False  # a reply reported prompt tokens read from the provider's cache

    def packing_settings(self, token_budget: int | None = None, **overrides: Any) -> PackingSettings:
        """Packing settings with the measured prompt and document reserves for this LM."""
        base = self._packing or PackingSettings()
        model = self.resolved.capabilities.tokenizer
        prompt, per_doc = measure_reserves(self.settings, model)
        return dataclasses.replace(
            base, token_budget=token_budget or base.token_budget, prompt_tokens=prompt,
            doc_overhead_tokens=per_doc, output_tokens_per_doc=self.settings.output_tokens_per_doc,
            model=model, **overrides,
        )

    async def extract_one(self, batch: DocumentBatch) -> BatchExtractionResult:
        """The executor's ``extract_fn``: one DSPy call on one (sub-)batch, with the output cap
        :meth:`prepare` fixed for it."""
        allowed = batch.max_tokens or self.allowance(batch)
        with dspy.context(lm=self.resolved.lm):
            prediction = await self.extractor.acall(list(batch.documents), max_tokens=allowed)
        validated, usage = prediction.validated, prediction.usage
        self._cut.update(prediction.cut)
        self.cache_seen = self.cache_seen or bool(usage[2])
        self.extractor.sizer.observe(prediction.documents_asked, usage[1], truncated=bool(prediction.cut))
        return to_result(batch, validated, usage)

    def allowance(self, batch: DocumentBatch) -> int:
        """``max_tokens`` for a call on ``batch``: the extractor's, or twice the ceiling when one of
        its documents was in a reply cut off before (the same allowance would cut it again)."""
        if self._cut.intersection(batch.document_ids):
            return 2 * self.settings.max_tokens(batch.batch_size)
        return self.extractor.max_tokens(batch.batch_size)

    def prepare(self, batch: DocumentBatch) -> DocumentBatch:
        """``batch`` readied for its next call: the ``max_tokens`` it will ask for, fixed here (the
        allowance may change while the call waits for the limiter; the provider counts what is
        sent), and what a tokens-per-minute limit counts: its prompt (less :meth:`cache_discount`)
        and that ``max_tokens``, once per pass (``settings.passes``: each is a call of that size)."""
        allowed = self.allowance(batch)
        charge = batch.budget_tokens - self.settings.max_tokens(batch.batch_size) + allowed - self.cache_discount()
        return batch.for_call(allowed, charge * self.settings.passes)

    def cache_discount(self) -> int:
        """Prompt tokens a tokens-per-minute limit will not count: the shared prefix the provider's
        cache serves, where its rules say cached tokens do not count, once a reply has shown the
        cache warm (before that, and where they count, 0)."""
        rules = self.resolved.capabilities.cache
        if rules is None or rules.counts_towards_tpm or not self.cache_seen:
            return 0
        return rules.cacheable(shared_prefix_tokens(self.settings, self.resolved.capabilities.tokenizer))

    def run(self, documents: Sequence[Document], token_budget: int | None = None,
            progress: ProgressFn | bool | None = None, **packing: Any) -> ServiceRun:
        """Pack ``documents`` (settings from :meth:`packing_settings`) and :meth:`execute` them."""
        pack = Packer(self.packing_settings(token_budget, **packing)).pack(list(documents))
        return self.execute(pack, len(documents), progress)

    def execute(self, pack: PackResult, documents: int, progress: ProgressFn | bool | None = None,
                on_outcome: Callable[[DocumentOutcome], None] | None = None,
                stop: threading.Event | None = None) -> ServiceRun:
        """Run packed batches to the end (virtual time for an emulated LM)."""
        return self.feed(pack, documents, 0, progress, on_outcome, stop)

    def feed(self, pack: PackResult | None, documents: int, low_water: int,
             progress: ProgressFn | bool | None = None, on_outcome: Callable[[DocumentOutcome], None] | None = None,
             stop: threading.Event | None = None) -> ServiceRun:
        """Add ``pack``'s batches to this service's run and run it until fewer than ``low_water``
        batches wait for their first call (0: until every batch is done). Every call of one service
        shares one run: one event loop and one pace (rate-limit window, concurrency, breaker,
        Retry-After pause), so a chunk boundary resets nothing. ``stop``: once set, no call starts
        (calls already sent finish and are kept); the run ends stopped. Ctrl-C cancels the run."""
        stream = self._stream(progress, stop)
        self._sink = on_outcome  # the run's outcomes go here until the next call names another sink
        seen, counts = len(self.metrics.attempts), stream.report.counts
        before = self._host.time() - stream.t0 if stream.t0 is not None else 0.0  # the run's seconds so far
        batches = pack.batches if pack is not None else []
        try:
            self._host.run(_advance(stream, batches, low_water))
        except BaseException:
            self._host.run(stream.abort())
            raise
        whole = stream.snapshot(self._host.time())
        mine = [stream.outcomes[i] for b in batches for i in b.document_ids]
        report = dataclasses.replace(whole, outcomes=mine, counts=whole.counts - counts, seconds=whole.seconds - before)
        return ServiceRun(pack, report, self.metrics.attempts[seen:], documents, whole.stop_reason)

    def _stream(self, progress: ProgressFn | bool | None, stop: threading.Event | None) -> ExecutionStream:
        """This service's run (started at its first call, on its own event loop)."""
        if self._run is None:
            executor = Executor(self.extract_one, self.policy, self.metrics, progress=progress,
                                on_outcome=self._outcome, prepare=self.prepare, pacing=self.pacing)
            self._host = LoopHost(self.resolved.capabilities.virtual_time)
            self._run = executor.stream(stop)
            self._unsubscribe = _listen(self.resolved, self._run.limiter)
        if stop is not None:
            self._run.stop = stop
        self._run.executor.progress = self._run.book.progress = progress
        return self._run

    def rate_limits(self) -> dict[str, Any] | None:
        """The limits this service's run paced by (``{rpm, tpm, window, source}``: said, a profile's,
        or learned from the provider's replies); None before its first call or without a window."""
        if self._run is None:
            return self._limits
        limits = getattr(self._run.limiter, "limits", None)
        return limits if limits and (limits["rpm"] or limits["tpm"]) else None

    def _outcome(self, outcome: DocumentOutcome) -> None:
        if self._sink is not None:
            self._sink(outcome)

    def close(self) -> None:
        """End this service's run: calls still in flight are cancelled (and recorded), its loop closed."""
        self._unsubscribe()
        self._limits = self.rate_limits()
        run, self._run = self._run, None
        if run is not None:
            self._host.run(run.abort())
            run.close()
        self._host.close()

    def extract_batch(self, documents: Sequence[Document], token_budget: int = 8192) -> BatchExtractionResult:
        """Original contract: per-document results of ``documents`` (failed ones in
        ``failed_document_ids`` with their reason, never as empty entity lists)."""
        run = self.run(documents, token_budget, progress=False)
        return run.report.to_batch_result(self.metrics.run_id)

    def get_batch_metrics(self) -> ProcessingMetrics:
        return self.metrics.get_statistics()


async def _advance(stream: ExecutionStream, batches: Sequence[DocumentBatch], low_water: int) -> None:
    stream.add(batches)
    await stream.settle(low_water)


def _listen(resolved: ResolvedLM, limiter: Window) -> Callable[[], None]:
    """``limiter`` learns the limits said in the provider's replies (where both can); the unsubscribe."""
    feed = getattr(resolved, "rates", None)
    if feed is not None and hasattr(limiter, "learn"):
        return feed.subscribe(partial(learn_limits, limiter))
    return lambda: None


_services: dict[str, ExtractionService] = {}  # LM spec -> the service extract_batch uses for it
_last: list[str] = []  # the spec extract_batch used last (what get_batch_metrics reports)


def default_service(lm: str | ResolvedLM | None = None) -> ExtractionService:
    """The service behind :func:`extract_batch` for ``lm`` (default: the one used last, else
    ``local``), created once per LM and kept, so its metrics add up across calls."""
    if lm is None:
        lm = _last[-1] if _last else "local"
    spec = lm.spec if isinstance(lm, ResolvedLM) else lm
    if spec not in _services:
        _services[spec] = ExtractionService(lm)
    _last[:] = [spec]
    return _services[spec]


def extract_batch(documents: Sequence[Document], token_budget: int = 8192,
                  lm: str | ResolvedLM | None = None) -> BatchExtractionResult:
    """Original API: pack ``documents`` under ``token_budget`` and extract (see the service)."""
    return default_service(lm).extract_batch(documents, token_budget)


def get_batch_metrics() -> ProcessingMetrics:
    """Original API: cumulative :class:`ProcessingMetrics` of :func:`extract_batch` calls (on the
    LM they used last)."""
    return default_service().get_batch_metrics()
