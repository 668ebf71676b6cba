"""The DSPy module: :class:`BatchExtractor` runs a batch's LM calls (one packed call, or one call
per document) and validates what they return."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from dataclasses import replace
from functools import partial
from typing import Any

import dspy
from dspy.utils.usage_tracker import track_usage

from toolkit.core import Document, normalise
from toolkit.extraction._adapter import BatchJSONAdapter, RawReply, ReplyParseError, end_repetition, parse_reply
from toolkit.extraction._demos import similar_demos
from toolkit.extraction._prompt import (
    BatchExtraction,
    DocumentIn,
    demo_example,
    response_schema,
)
from toolkit.extraction._settings import ExtractionSettings
from toolkit.extraction._sizing import OutputSizer
from toolkit.extraction._validation import ValidatedBatch, validate_reply
from toolkit.lm import cached_tokens, schema_of


class _BatchCalls:
    """The LM calls of one batch and what they found.

    ``packed``: one call on every document. ``parallel``: every document gets the one-document
    prompt; an engine with ``complete_many`` (the local model) answers them together in one
    decode loop, any other LM one call after another. A reply cut off by ``max_tokens`` (or
    mended by json-repair) loses its last record (see :meth:`ValidatedBatch.drop_last_record`):
    that document is missing and the executor re-sends it. A call that raises fails the batch,
    unless earlier one-document calls already have answers: they are kept and the documents left
    over are missing."""

    def __init__(self, extractor: BatchExtractor, documents: Sequence[Document], max_tokens: int | None,
                 predictor: dspy.Predict | None = None, call_tokens: int | None = None, pass_no: int = 1) -> None:
        if not documents:
            raise ValueError("a batch needs at least one document")
        self.extractor = extractor
        self.predictor = predictor or extractor.predict
        self.pass_no = pass_no
        self.documents = list(documents)
        n = len(self.documents)
        if extractor.layout == "parallel":
            self.pending = [[d] for d in self.documents]
            self.max_tokens = call_tokens or max(extractor.max_tokens(1), (max_tokens or 0) // n)
        else:
            self.pending = [self.documents]
            self.max_tokens = call_tokens or max_tokens or extractor.max_tokens(n)
        self.validated = ValidatedBatch()
        self.usage: list[int] | None = None  # (prompt, output, cached) tokens; None while no call reported usage
        self.asked = 0  # documents sent so far
        self.cut: list[str] = []  # documents of replies cut off by max_tokens

    def __iter__(self) -> Iterator[_Call]:
        """The ``dspy.Predict`` calls still to make, one after another, until the batch is done."""
        while self.pending:
            yield _Call(self, self.extractor._request(self.pending[0], self.max_tokens, self.pass_no))

    def later_pass(self, predictor: dspy.Predict, pass_no: int) -> _BatchCalls | None:
        """The calls of a further pass on the documents this one answered (None if none): the
        same layout, the pass's own predictor (its own worked examples), and the settings' ceiling
        allowance, not the learned one: a later pass's reply cut off is not asked again (its
        document keeps its answer), so its allowance must not depend on what the run has seen, or a
        document's answer would differ alone and in a batch."""
        answered = [d for d in self.documents if d.id in self.validated.entities]
        if not answered:
            return None
        n = 1 if self.extractor.layout == "parallel" else len(answered)
        return _BatchCalls(self.extractor, answered, None, predictor, self.extractor.settings.max_tokens(n), pass_no)

    def add_pass(self, later: _BatchCalls, pass_no: int) -> None:
        """Merge a further pass's answers: each document keeps what it has and gains the grounded
        mentions new to it (marked ``pass_no``); a document the pass did not answer keeps its
        answer (it is not missing: the first pass answered it). Its tokens and calls are counted."""
        counts = later.validated.counts
        for doc_id, found in later.validated.entities.items():
            kept = self.validated.entities[doc_id]
            seen = {(normalise(e.text), e.type) for e in kept}
            new = [replace(e, pass_no=pass_no) for e in found if (normalise(e.text), e.type) not in seen]
            kept.extend(new)
            self.validated.counts.pass_entities += len(new)
        for name in ("dropped", "duplicates", "ungrounded", "leaks", "repaired", "loops_ended", "unknown_ids",
                     "duplicate_records", "malformed_records"):
            setattr(self.validated.counts, name, getattr(self.validated.counts, name) + getattr(counts, name))
        for doc_id, dropped in later.validated.dropped.items():
            self.validated.dropped.setdefault(doc_id, []).extend(dropped)
        self.validated.counts.pass_calls += len(later.documents) if self.extractor.layout == "parallel" else 1
        if later.usage is not None:
            self.usage = [a + b for a, b in zip(self.usage or [0, 0, 0], later.usage)]
        self.asked += later.asked

    def salvage(self) -> bool:
        """A call raised: the batch fails (the executor retries it) unless earlier calls have
        answers; then they are kept, the documents left over are missing, and this is True."""
        if not self.asked:
            return False
        self.pending.clear()
        return True

    def accept(self, reply: RawReply, usage: tuple[int, int, int] | None, truncated: bool,
               loop_ended: bool = False) -> None:
        """The reply to the next pending call, its (prompt, output, cached prompt) tokens if the LM reported them;
        ``truncated``: it used all of ``max_tokens``; ``loop_ended``: the loop guard ended it."""
        documents = self.pending.pop(0)
        self.asked += len(documents)
        if usage is not None:
            self.usage = [a + b for a, b in zip(self.usage or [0, 0, 0], usage)]
        validated = validate_reply(reply, documents, self.extractor.settings)
        validated.counts.loops_ended = int(loop_ended)
        if truncated:
            self.cut.extend(d.id for d in documents)
        if truncated or validated.counts.repaired:  # the reply was cut (or mended): its tail is suspect
            validated.drop_last_record()
        self.validated.merge(validated)

    def accept_text(self, text: str, usage: tuple[int, int, int] | None, truncated: bool,
                    loop_ended: bool = False) -> None:
        """:meth:`accept` a reply given as text (a decoder's answer, a batch API's output line): a
        text with no usable records answers none of its documents (they are missing)."""
        try:
            reply = parse_reply(text)
        except ReplyParseError:
            reply = RawReply(items=[], repaired=True, text=text)
        self.accept(reply, usage, truncated, loop_ended)

    def accept_usage(self, prediction: dspy.Prediction, tracker: Any) -> None:
        """:meth:`accept` a ``dspy.Predict`` call's prediction; its ``results`` become the answer
        as validated (what DSPy's trace keeps: an optimizer's bootstrapped demo shows only
        grounded mentions, each under its own document)."""
        documents = self.pending[0]
        totals = list(tracker.get_total_tokens().values())
        usage = (sum(u.get("prompt_tokens") or 0 for u in totals), sum(u.get("completion_tokens") or 0 for u in totals),
                 sum(cached_tokens(u) for u in totals)) if totals else None
        self.accept(prediction.results, usage, truncated=usage is not None and usage[1] >= self.max_tokens)
        prediction["results"] = self.validated.records(documents)

    def together(self, engine: Any) -> None:
        """All pending one-document prompts through ``engine.complete_many`` at once (a prompt it
        gave no answer is not sent again: its document is missing)."""
        ex = self.extractor
        prompts = []
        for documents in self.pending:
            messages, config = ex.messages(documents, self.max_tokens, self.predictor, self.pass_no)
            prompts.append((messages, schema_of(config.get("response_format")), self.max_tokens))
        until = partial(end_repetition, relationships=ex.settings.relationships)
        for answer in engine.complete_many(prompts, until=until):
            self.accept_text(answer.text, (answer.prompt_tokens, answer.completion_tokens, 0),
                             answer.finish_reason == "length", loop_ended=answer.finish_reason == "repeat")
        self.pending.clear()

    def result(self) -> dspy.Prediction:
        if self.extractor.settings.abbreviations:
            self.validated.add_abbreviations(self.documents)
        self.validated.settle(self.documents)
        usage = tuple(self.usage) if self.usage else (None, None, None)
        return dspy.Prediction(validated=self.validated, usage=usage, cut=self.cut, documents_asked=self.asked)


class _Call:
    """One ``dspy.Predict`` call of a batch, as the ``with`` block that makes it and sets
    ``prediction``: the block tracks the call's usage; leaving it accepts the prediction, or, if
    the call raised, salvages the batch's earlier answers (:meth:`_BatchCalls.salvage`) or lets
    the error through."""

    def __init__(self, batch: _BatchCalls, kwargs: dict[str, Any]) -> None:
        self.batch, self.kwargs = batch, kwargs
        self.prediction: dspy.Prediction | None = None
        self._usage = track_usage()

    def __enter__(self) -> _Call:
        self._tracker = self._usage.__enter__()
        return self

    def __exit__(self, kind: Any, error: BaseException | None, trace: Any) -> bool:
        self._usage.__exit__(kind, error, trace)
        if error is None:
            self.batch.accept_usage(self.prediction, self._tracker)
            return False
        return isinstance(error, Exception) and self.batch.salvage()


class BatchExtractor(dspy.Module):
    """``BatchExtractor(settings)(documents)`` extracts a batch: ``.validated`` is the
    :class:`ValidatedBatch`, ``.usage`` (prompt, output, cached prompt) tokens, ``.cut`` the ids of documents
    whose reply hit ``max_tokens``. ``layout`` is ``packed`` (one prompt for the batch) or
    ``parallel`` (the one-document prompt for each document, see :class:`_BatchCalls`).

    ``demos``, the worked examples shown before every call, are the predictor's (as DSPy's
    ``Predict.demos``): the caller builds them (the service from ``settings``, see
    :func:`toolkit.jobs._service.demos_for`); by default the built-in example (:func:`demo_example`),
    or none without ``settings.demo``.

    A batch of one document is the one-document-per-call baseline: same prompt, same code.
    """

    def __init__(self, settings: ExtractionSettings | None = None, layout: str = "packed",
                 demos: Sequence[dspy.Example] | None = None,
                 pass_demos: Sequence[Sequence[dspy.Example]] = ()) -> None:
        super().__init__()
        self.settings = settings or ExtractionSettings()
        if layout not in ("packed", "parallel"):
            raise ValueError(f"layout must be packed or parallel, got {layout!r}")
        if demos is None and self.settings.demo and self.settings.demos:
            raise ValueError(f"settings.demos is {self.settings.demos!r}: pass the demos drawn from it "
                             "(toolkit.jobs._service.demos_for(settings))")
        if len(pass_demos) != self.settings.passes - 1:
            raise ValueError(f"settings.passes is {self.settings.passes}: pass the demos of the "
                             f"{self.settings.passes - 1} further passes (toolkit.jobs._service.demos_for), "
                             f"got {len(pass_demos)}")
        self.layout = layout
        self.predict = dspy.Predict(BatchExtraction)
        if demos is None:
            demos = [demo_example(self.settings)] if self.settings.demo else []
        self.predict.demos = list(demos)
        self.more_passes = [dspy.Predict(BatchExtraction) for _ in pass_demos]  # passes 2..N, a predictor each
        for predictor, shown in zip(self.more_passes, pass_demos):
            predictor.demos = list(shown)
        self.adapter = BatchJSONAdapter(relationships=self.settings.relationships)
        self.sizer = OutputSizer(self.settings)

    def max_tokens(self, n_docs: int) -> int:
        """The output allowance of a call on ``n_docs`` documents (see :class:`OutputSizer`)."""
        return self.sizer.allowance(n_docs)

    def _request(self, documents: Sequence[Document], max_tokens: int | None = None,
                 pass_no: int = 1) -> dict[str, Any]:
        """A ``dspy.Predict`` call's keyword arguments: the inputs, the LM config, and with
        ``similar`` demos the worked examples chosen for these documents (and this pass)."""
        if not documents:
            raise ValueError("a batch needs at least one document")
        config: dict[str, Any] = {"max_tokens": max_tokens or self.max_tokens(len(documents)),
                                  "temperature": self.settings.temperature}
        if self.settings.schema:
            config["response_format"] = response_schema([d.id for d in documents], self.settings)
        request: dict[str, Any] = {
            "documents": [DocumentIn(id=d.id, text=d.text) for d in documents],
            "entity_types": list(self.settings.entity_types),
            "config": config,
        }
        s = self.settings
        if s.demo and s.demos and s.demo_choice == "similar" and not s.program:
            request["demos"] = [demo_example(s, similar_demos(s.demos, s.shots, s.entity_types, documents, pass_no))]
        return request

    def messages(self, documents: Sequence[Document], max_tokens: int | None = None,
                 predictor: dspy.Predict | None = None,
                 pass_no: int = 1) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """The chat messages of a call on ``documents`` (as the adapter formats them, worked
        example included: ``predictor``'s, by default the first pass's, or those chosen for the
        documents) and its LM config (``max_tokens``, temperature, response format)."""
        request = self._request(documents, max_tokens, pass_no)
        config = request.pop("config")
        predictor = predictor or self.predict
        demos = request.pop("demos", predictor.demos)
        return self.adapter.format(predictor.signature, demos=demos, inputs=request), config

    def _passes(self, documents: Sequence[Document], max_tokens: int | None) -> Iterator[_BatchCalls]:
        """The batch's calls, pass after pass: the first pass on ``documents``, then each further
        pass on the documents answered (:meth:`_BatchCalls.later_pass`), merged into the first
        once its calls are made (the caller makes them between two steps)."""
        first = _BatchCalls(self, documents, max_tokens)
        yield first
        for pass_no, predictor in enumerate(self.more_passes, start=2):
            later = first.later_pass(predictor, pass_no)
            if later is None:
                return
            yield later
            first.add_pass(later, pass_no)

    def _engine(self) -> Any:
        """The LM's engine if it decodes several prompts together (then a batch of one document
        takes the same path: the one-document-per-call baseline runs the same code)."""
        engine = getattr(dspy.settings.lm, "engine", None)
        return engine if self.layout == "parallel" and hasattr(engine, "complete_many") else None

    def forward(self, documents: Sequence[Document], max_tokens: int | None = None) -> dspy.Prediction:
        """Extract ``documents``; ``max_tokens`` defaults to :meth:`max_tokens`."""
        engine, passes = self._engine(), list[_BatchCalls]()
        for calls in self._passes(documents, max_tokens):
            passes.append(calls)
            if engine is not None:
                calls.together(engine)  # every call at once: none left for the loop
            with dspy.context(adapter=self.adapter):
                for call in calls:
                    with call:
                        call.prediction = calls.predictor(**call.kwargs)
        return passes[0].result()

    async def aforward(self, documents: Sequence[Document], max_tokens: int | None = None) -> dspy.Prediction:
        engine, passes = self._engine(), list[_BatchCalls]()
        for calls in self._passes(documents, max_tokens):
            passes.append(calls)
            if engine is not None:
                await asyncio.to_thread(calls.together, engine)
            with dspy.context(adapter=self.adapter):
                for call in calls:
                    with call:
                        call.prediction = await calls.predictor.acall(**call.kwargs)
        return passes[0].result()


def settle_reply(extractor: Any, documents: Sequence[Document], text: str, tokens: tuple[int, int, int],
                 truncated: bool, max_tokens: int | None) -> Any:
    """One reply to a packed call on ``documents``, as the DSPy module settles a synchronous one:
    a ``dspy.Prediction`` with ``validated``, ``usage`` (prompt, output, cached) and ``cut``."""
    calls = _BatchCalls(extractor, documents, max_tokens)
    calls.accept_text(text, tokens, truncated=truncated)
    return calls.result()
