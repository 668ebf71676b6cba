"""The batch-API execution mode: a run's packed batches sent as a provider batch, polled, settled.

:class:`BatchApiRunner` is a :class:`~toolkit.jobs.Runner`, so the main job runs it through its one
code path (``extract --mode batch-api``). ``submit`` packs a chunk with the run's packer, writes
each packed batch as one request line (:mod:`toolkit.jobs.batchapi._requests`), splits the lines into
files within the provider's limits, uploads each file and creates its batch, recording file id,
batch id and every request's documents in the store *before* moving on. ``drain`` polls every
batch with a progress bar until it ends, settles its output lines with the synchronous path's
reply code (:mod:`toolkit.jobs.batchapi._replies`), and sends every document a batch did not answer
(left out, cut off, failed line, expired or failed batch) through the synchronous executor
(:meth:`toolkit.jobs._service.ExtractionService.execute`), where it ends extracted or failed with its
reason. A resumed run finds its open jobs in the store (:mod:`toolkit.jobs.batchapi._jobs`): their
documents are not sent again, their batches are polled; a batch created just before a crash is
found by its metadata and adopted. Each job is settled once: its lines are recorded and its status
written before its documents are handed on, so a kill at any point never records a line twice.
A batch the provider no longer knows is reported and its documents sent again once (then through
the synchronous executor); a provider that keeps failing stops the run, resumable.

``stop`` (the run's Stop event): once set nothing is uploaded or created, no synchronous call
starts, polling ends at once, and the runner reports the run stopped. What was already paid is
recorded, and the answers of a job being settled are kept. :func:`run_batch_api` runs a list of
documents this way (for the bench). The sending side is :mod:`~toolkit.jobs.batchapi._sending`, the
polling side :mod:`~toolkit.jobs.batchapi._polling`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from toolkit.core import Counts, Document
from toolkit.execution import AttemptRecord, DocumentOutcome, ExecutionReport
from toolkit.jobs._runners import Chunk, RunnerFigures
from toolkit.jobs.batchapi._polling import BatchPoller
from toolkit.jobs.batchapi._providers import BatchProvider
from toolkit.jobs.batchapi._sending import BatchApiSettings, BatchService

if TYPE_CHECKING:
    from toolkit.jobs._service import ServiceRun
    from toolkit.lm import ResolvedLM


def batch_provider(resolved: ResolvedLM, api_base: str | None = None) -> BatchProvider:
    """The batch API of ``resolved``: Anthropic's Message Batches for ``anthropic/MODEL`` (at
    ``api_base`` if given), the OpenAI-compatible server at ``api_base``, the in-process emulated
    one for ``emulated:PROFILE``, OpenAI's for ``openai/MODEL``; any other LM has none (one line)."""
    from toolkit.jobs.batchapi._providers import LiteLLMBatches

    if resolved.spec.startswith("anthropic/"):
        from toolkit.jobs.batchapi._anthropic import AnthropicBatches, AnthropicHTTP

        return AnthropicBatches(AnthropicHTTP(api_base), getattr(resolved.lm, "kwargs", {}).get("prompt_cache"))
    if api_base:
        return LiteLLMBatches(api_base)
    if resolved.emulated:
        from toolkit.jobs.batchapi._emulated import emulated_provider

        return emulated_provider(resolved)
    if resolved.spec.startswith("openai/"):
        return LiteLLMBatches()
    raise ValueError(f"--mode batch-api needs a provider's batch API: {resolved.spec} has none (use openai/MODEL, "
                     "anthropic/MODEL, an OpenAI-compatible --api-base, or emulated:PROFILE)")


class BatchApiRunner(BatchPoller):
    """Chunks sent through ``provider``'s batch API (see the module docstring): ``submit`` sends
    (:class:`~toolkit.jobs.batchapi._sending.BatchSender`), ``drain`` polls, settles and falls back
    (:class:`~toolkit.jobs.batchapi._polling.BatchPoller`). ``db``: the run's store (None: nothing
    kept, as in the bench); ``progress``: a polling bar on stderr; ``stop``: the run's Stop event."""

    def summary(self) -> RunnerFigures:
        """What the run's summary says of this runner: the mode, the run's jobs, this session's
        failed lines and lost batches (the counts of its calls: :func:`~toolkit.jobs.batchapi.batch_api_fields`)."""
        return {"mode": "batch-api", "batch_api_jobs": self.book.count, "batch_api_failed_lines": self.failed_lines,
                "batch_api_lost_batches": self.lost}

    def close(self) -> None:
        """Ends the service's run (the synchronous fallback's)."""
        self.service.close()


def run_batch_api(service: BatchService, documents: Sequence[Document], token_budget: int | None = None, *,
                  provider: BatchProvider | None = None, settings: BatchApiSettings | None = None,
                  run_id: str = "bench", progress: bool = False, **packing: object) -> ServiceRun:
    """Extract ``documents`` through the batch API of ``service``'s LM (its in-process emulation
    for ``emulated:PROFILE``, on a virtual clock), packed as ``service.run`` packs them; returns a
    :class:`~toolkit.jobs._service.ServiceRun` (outcomes in input order, every call's record: lines
    through the batch API have batch ids starting ``batch-api:``, the synchronous fallback's not;
    ``report.seconds``: the batches' turnaround plus the fallback's time)."""
    from toolkit.jobs._service import ServiceRun
    from toolkit.packing import get_counter

    documents = list(documents)
    pack_settings = service.packing_settings(token_budget, **packing)
    counter = get_counter(pack_settings.model)
    chunk = Chunk(documents, [counter.count(d.text) for d in documents], pack_settings)
    runner = BatchApiRunner(service, None, run_id, provider or batch_provider(service.resolved, service.api_base),
                            settings, progress)
    outcomes: dict[str, DocumentOutcome] = {}
    attempts: list[AttemptRecord] = []
    sink = lambda o: outcomes.__setitem__(o.id, o)  # noqa: E731
    results = [*runner.submit(chunk, sink, attempts.extend), *runner.drain(sink, attempts.extend)]
    report = ExecutionReport([outcomes.get(d.id) or DocumentOutcome(d.id) for d in documents],
                             counts=Counts.total(a.counts for a in attempts), seconds=sum(r.seconds for r in results),
                             stop_reason=next((r.stopped for r in results if r.stopped), None))
    pack = chunk.pack()
    return ServiceRun(pack, report, attempts, len(documents), report.stop_reason)
