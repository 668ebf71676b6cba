"""Batch entity extraction through DSPy: one call serves several documents, keyed by document id.

The signature takes ``{id, text}`` documents and the entity types and returns one record per id.
Each call sends a JSON schema built for its batch (ids and types as enums, bounded lists) where the
LM supports structured output. Replies are parsed with :mod:`json_repair` as a last resort, then
validated: unknown ids dropped, missing ids left out (the executor re-sends them), and every entity
kept only if its text occurs in its own document. An entity found only in another document of the
batch is a cross-document *leak*: counted, never stored under the wrong id.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import textwrap
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

import dspy
import json_repair
from dspy.utils.usage_tracker import track_usage
from pydantic import BaseModel, Field

from toolkit.documents import Document, Entity, Relationship
from toolkit.errors import MalformedReply
from toolkit.lm.engine import schema_of
from toolkit.counts import Counts
from toolkit.models import BatchExtractionResult, DocumentBatch
from toolkit.store.dialect import MAX_MENTION_CHARS, MAX_TYPE_CHARS

LAYOUTS = ("auto", "packed", "parallel")
PRESETS: dict[str, tuple[str, ...]] = {
    "biomedical": ("GENE", "PROTEIN", "DISEASE", "CHEMICAL", "DRUG", "CELL_TYPE", "ORGANISM"),
    "general": ("PERSON", "ORGANIZATION", "LOCATION", "PRODUCT", "EVENT", "WORK", "OTHER"),
}


@dataclass(frozen=True)
class ExtractionSettings:
    """What to extract and how much output to allow. Serialises to JSON with :func:`asdict`."""

    entity_types: tuple[str, ...] = PRESETS["biomedical"]
    relationships: bool = True
    max_entities_per_doc: int = 20
    max_relationships_per_doc: int = 10
    max_entity_chars: int = 60
    output_tokens_per_doc: int = 256  # max_tokens = 48 + n_docs * this
    temperature: float = 0.0
    adaptive_output: bool = True  # size the output allowance from measured replies (see OutputSizer)
    schema: bool = True  # send a per-batch JSON schema (structured output) when the LM supports it
    demo: bool = True  # show the worked example (DEMO_DOCUMENTS) before every call
    demos: str | None = None  # a gold corpus whose annotated documents replace it (see toolkit.demos)
    shots: int = 2  # documents drawn from ``demos``
    layout: str = "auto"  # packed | parallel | auto: the backend's default (Capabilities.layout)

    def __post_init__(self) -> None:
        if not self.entity_types:
            raise ValueError("entity_types must not be empty")
        if any(not t or not isinstance(t, str) or len(t) > MAX_TYPE_CHARS for t in self.entity_types):
            raise ValueError(f"entity types must be non-empty strings of at most {MAX_TYPE_CHARS} characters, "
                             f"got {self.entity_types!r}")
        object.__setattr__(self, "entity_types", tuple(t.upper() for t in self.entity_types))
        if self.layout not in LAYOUTS:
            raise ValueError(f"unknown layout {self.layout!r}; layouts: {', '.join(LAYOUTS)}")
        if self.shots < 1:
            raise ValueError(f"shots must be at least 1, got {self.shots}")

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> ExtractionSettings:
        try:
            return cls(entity_types=PRESETS[name], **overrides)
        except KeyError:
            raise ValueError(f"unknown entity preset {name!r}; presets: {', '.join(PRESETS)}") from None

    def max_tokens(self, n_docs: int) -> int:
        return 48 + n_docs * self.output_tokens_per_doc

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class OutputSizer:
    """The output tokens to allow a call on ``n`` documents, learned from the replies of this run.

    Until ``warmup`` replies are seen it allows ``settings.max_tokens(n)`` (the ceiling).
    Then ``n*mu + z*sigma*sqrt(n)``, where ``mu`` and ``sigma`` are the mean and spread of one
    document's output, estimated from the last ``window`` replies of any size (a reply on ``n``
    documents has mean ``n*mu`` and variance ``n*sigma**2``): a batch's total varies much less than
    one document's, so packed calls need a smaller allowance per document than single ones. With
    ``z = 3`` a reply is cut off about once in a few hundred calls (then its missing documents are
    re-sent). A cut-off reply counts as needing the ceiling, so the allowance grows back at once.
    The allowance is ``max_tokens`` and what a provider's tokens-per-minute limit counts, whatever
    is actually written: a tight one is throughput and money."""

    def __init__(self, settings: ExtractionSettings, warmup: int = 5, window: int = 50, floor: int = 16,
                 z: float = 3.0) -> None:
        self.settings = settings
        self.ceiling = settings.output_tokens_per_doc
        self.enabled = settings.adaptive_output
        self.warmup, self.floor, self.z = warmup, floor, z
        self._recent: deque[tuple[int, float]] = deque(maxlen=window)  # (documents, output tokens)
        self._lock = threading.Lock()

    def observe(self, documents: int, output_tokens: int | None, truncated: bool) -> None:
        if output_tokens is None or documents < 1:
            return
        with self._lock:
            self._recent.append((documents, float(documents * self.ceiling if truncated else output_tokens)))

    def per_document(self) -> tuple[float, float] | None:
        """(mean, standard deviation) of one document's output tokens; None before ``warmup``."""
        with self._lock:
            if not self.enabled or len(self._recent) < self.warmup:
                return None
            return output_per_document(list(self._recent))

    def allowance(self, n: int) -> int:
        """``max_tokens`` of a call on ``n`` documents (measured replies include the reply's frame)."""
        estimate = self.per_document()
        if estimate is None:
            return self.settings.max_tokens(n)
        return output_allowance(n, *estimate, self.settings, self.z, self.floor)


def output_per_document(replies: Sequence[tuple[int, float]]) -> tuple[float, float]:
    """(mean, standard deviation) of one document's output tokens, from ``(documents, output
    tokens)`` of replies of any size: a reply on ``n`` documents has mean ``n*mu``, variance ``n*sigma**2``."""
    docs = sum(n for n, _ in replies)
    if not docs:
        raise ValueError("no replies to measure")
    mu = sum(t for _, t in replies) / docs
    variance = sum((t - n * mu) ** 2 / n for n, t in replies) / max(1, len(replies) - 1)
    return mu, math.sqrt(variance)


def output_allowance(n: int, mu: float, sigma: float, settings: ExtractionSettings, z: float = 3.0,
                     floor: int = 16) -> int:
    """``n*mu + z*sigma*sqrt(n)`` output tokens for a call on ``n`` documents, within
    ``[n*floor, settings.max_tokens(n)]``."""
    return max(n * floor, min(settings.max_tokens(n), math.ceil(n * mu + z * sigma * math.sqrt(n))))


# ------------------------------------------------------------------------------------ signature
class DocumentIn(BaseModel):
    id: str
    text: str


class EntityOut(BaseModel):
    text: str = Field(description="the mention exactly as written in this document")
    type: str


class RelationshipOut(BaseModel):
    source: str
    target: str
    type: str


class DocumentOut(BaseModel):
    id: str = Field(description="the id of the document these entities were found in")
    entities: list[EntityOut]
    relationships: list[RelationshipOut] = Field(default_factory=list)


class BatchExtraction(dspy.Signature):
    """Extract every mention of the requested entity types from each document separately.

    An entity is a short name or noun phrase (a few words, abbreviations included), never a whole
    sentence. Copy each mention exactly as it is written in that document. Report a document's
    entities only under its own id, never under another document's id; a document that mentions
    none of the types gets an empty list."""

    documents: list[DocumentIn] = dspy.InputField(desc="documents, each with its id")
    entity_types: list[str] = dspy.InputField(desc="the only entity types to report")
    results: list[DocumentOut] = dspy.OutputField(desc="one record per input document, in input order")


# A worked example shown to the model before every call (self-written text; its entities are
# filtered to the requested types). Two documents, so it also shows how ids keep results apart.
DEMO_DOCUMENTS = (
    ("example-1", "Duchenne muscular dystrophy (DMD) is caused by mutations in the DMD gene, which "
                  "encodes dystrophin. Corticosteroids such as prednisone slow the loss of muscle "
                  "strength in boys with DMD."),
    ("example-2", "Mice lacking the Apc gene develop intestinal adenomas. Treatment with aspirin reduced "
                  "polyp number, and macrophages infiltrated the colorectal tumours."),
)
DEMO_ENTITIES = {
    "example-1": (("Duchenne muscular dystrophy", "DISEASE"), ("DMD", "DISEASE"), ("DMD gene", "GENE"),
                  ("dystrophin", "PROTEIN"), ("Corticosteroids", "DRUG"), ("prednisone", "DRUG")),
    "example-2": (("Mice", "ORGANISM"), ("Apc", "GENE"), ("intestinal adenomas", "DISEASE"),
                  ("aspirin", "DRUG"), ("polyp", "DISEASE"), ("macrophages", "CELL_TYPE"),
                  ("colorectal tumours", "DISEASE")),
}
DEMO_RELATIONSHIPS = {"example-1": (("DMD gene", "dystrophin", "ENCODES"), ("prednisone", "DMD", "TREATS")),
                      "example-2": (("aspirin", "polyp", "REDUCES"),)}


def demo_example(settings: ExtractionSettings) -> dspy.Example:
    """The worked example, restricted to ``settings``' entity types (and relationships); with
    ``settings.demos``, ``settings.shots`` annotated documents of that corpus instead (entities only)."""
    if settings.demos:
        from toolkit.demos import gold_demos

        shown = gold_demos(settings.demos, settings.shots, settings.entity_types)
        return _example([DocumentIn(id=d.id, text=d.text) for d, _ in shown], settings, [
            DocumentOut(id=d.id, entities=[EntityOut(text=t, type=k) for t, k in mentions], relationships=[])
            for d, mentions in shown])
    wanted = set(settings.entity_types)
    results = []
    for doc_id, _ in DEMO_DOCUMENTS:
        entities = [EntityOut(text=t, type=k) for t, k in DEMO_ENTITIES[doc_id] if k in wanted]
        names = {e.text for e in entities}
        rels = [RelationshipOut(source=a, target=b, type=r) for a, b, r in DEMO_RELATIONSHIPS[doc_id]
                if settings.relationships and a in names and b in names]
        results.append(DocumentOut(id=doc_id, entities=entities, relationships=rels))
    return _example([DocumentIn(id=i, text=t) for i, t in DEMO_DOCUMENTS], settings, results)


def _example(documents: list[DocumentIn], settings: ExtractionSettings, results: list[DocumentOut]) -> dspy.Example:
    return dspy.Example(documents=documents, entity_types=list(settings.entity_types),
                        results=results).with_inputs("documents", "entity_types")


def response_schema(ids: Sequence[str], settings: ExtractionSettings) -> dict[str, Any]:
    """JSON schema for one batch's reply: ids and types as enums, every list bounded."""
    entity = {
        "type": "object",
        "properties": {
            "text": {"type": "string", "minLength": 1, "maxLength": settings.max_entity_chars},
            "type": {"type": "string", "enum": list(settings.entity_types)},
        },
        "required": ["text", "type"],
        "additionalProperties": False,
    }
    record: dict[str, Any] = {
        "type": "object",
        "properties": {
            "id": {"type": "string", "enum": list(ids)},
            "entities": {"type": "array", "items": entity, "maxItems": settings.max_entities_per_doc},
        },
        "required": ["id", "entities"],
        "additionalProperties": False,
    }
    if settings.relationships:
        record["properties"]["relationships"] = {
            "type": "array",
            "maxItems": settings.max_relationships_per_doc,
            "items": {
                "type": "object",
                "properties": {k: {"type": "string", "maxLength": settings.max_entity_chars}
                               for k in ("source", "target", "type")},
                "required": ["source", "target", "type"],
                "additionalProperties": False,
            },
        }
        record["required"].append("relationships")
    schema = {
        "type": "object",
        "properties": {"results": {"type": "array", "items": record, "minItems": 1, "maxItems": len(ids)}},
        "required": ["results"],
        "additionalProperties": False,
    }
    return {"type": "json_schema", "json_schema": {"name": "batch_extraction", "schema": schema, "strict": False}}


# -------------------------------------------------------------------------------------- parsing
@dataclass
class RawReply:
    """The reply's per-document records before validation; ``repaired`` if JSON had to be fixed."""

    items: list[Any]
    repaired: bool = False
    text: str = ""


_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)
_FIELD = re.compile(r"\[\[ ## results ## \]\]\s*(.*?)\s*(?:\[\[ ## \w+ ## \]\]|$)", re.DOTALL)


def parse_reply(text: str) -> RawReply:
    """Parse a model reply into records. Strict JSON first, then :func:`json_repair.loads`.

    Accepts ``{"results": [...]}`` (also ``documents``), a bare list, either inside a markdown
    fence or after DSPy's ``[[ ## results ## ]]`` field marker. Raises
    :class:`MalformedReply` when nothing usable remains.
    """
    body = text or ""
    if field := _FIELD.search(body):  # DSPy's chat format: [[ ## results ## ]] then the value
        body = field.group(1)
    body = _FENCE.sub(r"\1", body)
    repaired = False
    try:
        data = json.loads(body)
    except json.JSONDecodeError:
        repaired = True
        data = json_repair.loads(body)
    if isinstance(data, dict):
        data = next((data[k] for k in ("results", "documents") if k in data), None)
    if not isinstance(data, list):
        raise MalformedReply(f"reply has no list of per-document results: {text[:200]!r}")
    return RawReply(items=data, repaired=repaired, text=text)


class BatchJSONAdapter(dspy.JSONAdapter):
    """DSPy's JSON adapter with a compact output description, a per-call schema (given by the
    caller) and a parse that keeps the raw records for :func:`validate_reply` instead of failing
    the whole batch on one bad record. DSPy's default spells out the pydantic schema in the prompt
    (about 600 tokens); the schema is enforced by structured output instead."""

    def __init__(self, relationships: bool = True) -> None:
        super().__init__()
        self.relationships = relationships

    def format_system_message(self, signature) -> str:  # noqa: ANN001
        """The task and the reply's layout only: DSPy's field listing repeats what they say."""
        record = '{"id": "<document id>", "entities": [{"text": "<mention>", "type": "<entity type>"}]'
        task = textwrap.dedent(signature.instructions).strip()
        if self.relationships:
            record += ', "relationships": [{"source": "<mention>", "target": "<mention>", "type": "<RELATION>"}]'
            task += " Relationships link two entities of the same document."
        return (
            f'{task}\n\nInputs: [[ ## documents ## ]] is a JSON list of documents {{"id", "text"}}; '
            "[[ ## entity_types ## ]] lists the entity "
            f'types to report.\nOutput: one JSON object {{"results": [{record}}}, ...]}} with one record per '
            "document, in input order."
        )

    def user_message_output_requirements(self, signature) -> str:  # noqa: ANN001
        return 'Respond with one JSON object {"results": [...]}.'

    def _prepare_response_format(self, lm, lm_kwargs, signature):  # noqa: ANN001 - DSPy's hook
        if "response_format" in lm_kwargs:
            if "response_format" not in lm.supported_params:
                lm_kwargs.pop("response_format")
            return
        super()._prepare_response_format(lm, lm_kwargs, signature)

    def format_assistant_message_content(self, signature, outputs, missing_field_message=None) -> str:  # noqa: ANN001
        """Demo answers as compact JSON (the model copies their layout: indentation costs tokens)."""
        exclude = None if self.relationships else {"relationships"}
        records = [r.model_dump(exclude=exclude) if isinstance(r, BaseModel) else r
                   for r in outputs.get("results") or []]
        return json.dumps({"results": records}, ensure_ascii=False)

    def parse(self, signature, completion: str) -> dict[str, Any]:  # noqa: ANN001
        return {"results": parse_reply(completion)}


_ENTITY_OBJECT = re.compile(r'\{"text":\s*"((?:[^"\\]|\\.)*)",\s*"type":\s*"([^"\\]*)"\}')


def end_repetition(text: str, relationships: bool = False) -> str | None:
    """A one-document reply ended before a loop: when the entity it has just closed and the one
    before both repeat earlier ones (a small model's greedy loop, which would run to the output
    ceiling), the reply as of its last new entity, closed; else None. Validation drops repeats
    anyway, so nothing a complete reply would keep is lost, and the document is not re-sent."""
    found = list(_ENTITY_OBJECT.finditer(text))
    if len(found) < 3 or text[found[-1].end():].strip(" ,\n"):  # only right after an entity closes
        return None
    keys = [(normalise(m.group(1)), m.group(2)) for m in found]
    if keys[-1] not in keys[:-1] or keys[-2] not in keys[:-2]:
        return None
    return text[: found[-3].end()] + "]" + (', "relationships": []' if relationships else "") + "}]}"


# ----------------------------------------------------------------------------------- validation
def normalise(text: str) -> str:
    return " ".join(text.casefold().split())


def _locate(mention: str, text: str) -> tuple[int, int] | None:
    """Offsets of ``mention`` in ``text``, ignoring case and runs of whitespace; None if absent."""
    words = mention.split()
    if not words:
        return None
    pattern = r"\s+".join(re.escape(w) for w in words)
    match = re.search(pattern, text, re.IGNORECASE)
    return (match.start(), match.end()) if match else None


@dataclass
class ValidatedBatch:
    entities: dict[str, list[Entity]] = field(default_factory=dict)
    relationships: dict[str, list[Relationship]] = field(default_factory=dict)
    counts: Counts = field(default_factory=Counts)
    missing_ids: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)  # ids in the reply that name no document of the batch
    last_record: str | None = None  # the document of the reply's last record, if that record was kept

    def drop_last_record(self) -> None:
        """A reply cut off by ``max_tokens`` (or mended by json-repair, which closes what was cut):
        its last record may be incomplete, so that document counts as missing (the executor
        re-sends it) instead of being stored with part of its entities. A last record that was
        not kept (cut before its list of entities) is missing already."""
        doc_id, self.last_record = self.last_record, None
        if doc_id is None or doc_id not in self.entities:
            return
        self.counts.entities -= len(self.entities.pop(doc_id))
        self.relationships.pop(doc_id, None)
        self.missing_ids.append(doc_id)
        self.counts.missing_ids += 1

    def merge(self, other: ValidatedBatch) -> None:
        """Add another call's findings (one document's answer in the parallel layout) to this batch's."""
        self.entities.update(other.entities)
        self.relationships.update(other.relationships)
        self.unknown.extend(other.unknown)
        self.counts = self.counts + other.counts

    def settle(self, documents: Sequence[Document]) -> None:
        """Recount after merging: documents of ``documents`` without a record are missing."""
        self.missing_ids = [d.id for d in documents if d.id not in self.entities]
        self.counts.missing_ids = len(self.missing_ids)
        self.counts.entities = sum(len(v) for v in self.entities.values())


def _as_str(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def _matcher(documents: Sequence[Document]) -> Any:
    """A reply's id -> the batch's document: the id exactly as given, else with surrounding
    whitespace ignored on both sides when that names exactly one document."""
    exact = {d.id: d for d in documents}
    loose: dict[str, list[Document]] = {}
    for d in documents:
        loose.setdefault(d.id.strip(), []).append(d)

    def match(value: Any) -> Document | None:
        if not isinstance(value, str):
            return None
        if value in exact:
            return exact[value]
        candidates = loose.get(value.strip(), [])
        return candidates[0] if len(candidates) == 1 else None

    return match


def validate_reply(reply: RawReply, documents: Sequence[Document], settings: ExtractionSettings) -> ValidatedBatch:
    """Check a reply against its batch: ids, types, grounding and leaks (see module docstring). A
    record without a list of entities says nothing about its document: it counts as malformed and
    the document as missing (re-sent), never as "no entities"."""
    out = ValidatedBatch()
    counts = out.counts
    counts.repaired = int(reply.repaired)
    by_id = {d.id: d for d in documents}
    match = _matcher(documents)
    allowed = set(settings.entity_types)
    for item in reply.items:
        out.last_record = None
        raw_id = item.get("id") if isinstance(item, dict) else None
        if _as_str(raw_id) is None or not isinstance(item.get("entities"), list):
            counts.malformed_records += 1
            continue
        document = match(raw_id)
        if document is None:
            counts.unknown_ids += 1
            out.unknown.append(str(raw_id)[:80])
            continue
        doc_id = out.last_record = document.id
        if doc_id in out.entities:
            counts.duplicate_records += 1
        kept = out.entities.setdefault(doc_id, [])
        seen = {(normalise(e.text), e.type) for e in kept}
        for raw in item["entities"]:
            mention = _as_str(raw.get("text")) if isinstance(raw, dict) else None
            etype = (_as_str(raw.get("type")) or "").upper() if isinstance(raw, dict) else ""
            if mention is None or etype not in allowed or len(mention) > MAX_MENTION_CHARS:
                counts.dropped += 1
                continue
            span = _locate(mention, document.text)
            if span is None:
                if any(_locate(mention, d.text) for i, d in by_id.items() if i != doc_id):
                    counts.leaks += 1
                else:
                    counts.ungrounded += 1
                continue
            key = (normalise(mention), etype)
            if key in seen:
                counts.duplicates += 1
                continue
            seen.add(key)
            confidence = raw.get("confidence")
            kept.append(Entity(mention, etype, doc_id,
                               confidence=float(confidence) if isinstance(confidence, (int, float)) else None,
                               start=span[0], end=span[1]))
        rels = out.relationships.setdefault(doc_id, [])
        raw_rels = item.get("relationships") if settings.relationships else None
        names = {normalise(e.text) for e in kept}
        for raw in raw_rels if isinstance(raw_rels, list) else []:
            parts = [_as_str(raw.get(k)) if isinstance(raw, dict) else None for k in ("source", "target", "type")]
            if None in parts or normalise(parts[0]) not in names or normalise(parts[1]) not in names:
                counts.dropped_relationships += 1
                continue
            rels.append(Relationship(parts[0], parts[1], parts[2].upper()[:MAX_TYPE_CHARS], doc_id))
    out.settle(documents)
    return out


# ----------------------------------------------------------------------------------------- module
class _BatchCalls:
    """The LM calls of one batch and what they found.

    ``packed``: one call on every document. ``parallel``: every document gets the one-document
    prompt; an engine with ``complete_many`` (the local model) answers them together in one
    decode loop, any other LM one call after another. A reply cut off by ``max_tokens`` (or
    mended by json-repair) loses its last record (see :meth:`ValidatedBatch.drop_last_record`):
    that document is missing and the executor re-sends it. A call that raises fails the batch,
    unless earlier one-document calls already have answers: they are kept and the documents left
    over are missing."""

    def __init__(self, extractor: BatchExtractor, documents: Sequence[Document], max_tokens: int | None) -> None:
        if not documents:
            raise ValueError("a batch needs at least one document")
        self.extractor = extractor
        self.documents = list(documents)
        n = len(self.documents)
        if extractor.layout == "parallel":
            self.pending = [[d] for d in self.documents]
            self.max_tokens = max(extractor.max_tokens(1), (max_tokens or 0) // n)
        else:
            self.pending = [self.documents]
            self.max_tokens = max_tokens or extractor.max_tokens(n)
        self.validated = ValidatedBatch()
        self.usage: list[int] | None = None  # (prompt, output) tokens; None while no call reported usage
        self.asked = 0  # documents sent so far
        self.cut: list[str] = []  # documents of replies cut off by max_tokens

    def next_call(self) -> dict[str, Any] | None:
        """Keyword arguments of the next ``dspy.Predict`` call, or None when the batch is done."""
        return self.extractor._request(self.pending[0], self.max_tokens) if self.pending else None

    def failed(self, exc: BaseException) -> None:
        """A call raised: the batch fails (the executor retries it) unless it already has answers."""
        if not self.asked:
            raise exc
        self.pending.clear()

    def accept(self, reply: RawReply, usage: tuple[int, int] | None, truncated: bool, loop_ended: bool = False) -> None:
        """The reply to the next pending call, its (prompt, output) tokens if the LM reported them;
        ``truncated``: it used all of ``max_tokens``; ``loop_ended``: the loop guard ended it."""
        documents = self.pending.pop(0)
        self.asked += len(documents)
        if usage is not None:
            self.usage = [a + b for a, b in zip(self.usage or [0, 0], usage)]
        validated = validate_reply(reply, documents, self.extractor.settings)
        validated.counts.loops_ended = int(loop_ended)
        if truncated:
            self.cut.extend(d.id for d in documents)
        if truncated or validated.counts.repaired:  # the reply was cut (or mended): its tail is suspect
            validated.drop_last_record()
        self.validated.merge(validated)

    def accept_usage(self, prediction: dspy.Prediction, tracker: Any) -> None:
        totals = list(tracker.get_total_tokens().values())
        if not totals:
            self.accept(prediction.results, None, truncated=False)
            return
        usage = (sum(u.get("prompt_tokens") or 0 for u in totals), sum(u.get("completion_tokens") or 0 for u in totals))
        self.accept(prediction.results, usage, truncated=usage[1] >= self.max_tokens)

    def together(self, engine: Any) -> None:
        """All pending one-document prompts through ``engine.complete_many`` at once."""
        ex = self.extractor
        prompts = []
        for documents in self.pending:
            messages, config = ex.messages(documents, self.max_tokens)
            prompts.append((messages, schema_of(config.get("response_format")), self.max_tokens))
        until = partial(end_repetition, relationships=ex.settings.relationships)
        for answer in engine.complete_many(prompts, until=until):
            try:
                reply = parse_reply(answer.text)
            except MalformedReply:
                reply = RawReply(items=[], repaired=True, text=answer.text)
            self.accept(reply, (answer.prompt_tokens, answer.completion_tokens), answer.finish_reason == "length",
                        loop_ended=answer.finish_reason == "repeat")

    def result(self) -> dspy.Prediction:
        self.validated.settle(self.documents)
        usage = tuple(self.usage) if self.usage else (None, None)
        return dspy.Prediction(validated=self.validated, usage=usage, cut=self.cut, documents_asked=self.asked)


class BatchExtractor(dspy.Module):
    """``BatchExtractor(settings)(documents)`` extracts a batch: ``.validated`` is the
    :class:`ValidatedBatch`, ``.usage`` (prompt, output) tokens, ``.cut`` the ids of documents
    whose reply hit ``max_tokens``. ``layout`` is ``packed`` (one prompt for the batch) or
    ``parallel`` (the one-document prompt for each document, see :class:`_BatchCalls`).

    A batch of one document is the one-document-per-call baseline: same prompt, same code.
    """

    def __init__(self, settings: ExtractionSettings | None = None, layout: str = "packed") -> None:
        super().__init__()
        self.settings = settings or ExtractionSettings()
        if layout not in ("packed", "parallel"):
            raise ValueError(f"layout must be packed or parallel, got {layout!r}")
        self.layout = layout
        self.predict = dspy.Predict(BatchExtraction)
        self.demos = [demo_example(self.settings)] if self.settings.demo else []
        self.adapter = BatchJSONAdapter(relationships=self.settings.relationships)
        self.sizer = OutputSizer(self.settings)

    def max_tokens(self, n_docs: int) -> int:
        """The output allowance of a call on ``n_docs`` documents (see :class:`OutputSizer`)."""
        return self.sizer.allowance(n_docs)

    def _request(self, documents: Sequence[Document], max_tokens: int | None = None) -> dict[str, Any]:
        if not documents:
            raise ValueError("a batch needs at least one document")
        config: dict[str, Any] = {"max_tokens": max_tokens or self.max_tokens(len(documents)),
                                  "temperature": self.settings.temperature}
        if self.settings.schema:
            config["response_format"] = response_schema([d.id for d in documents], self.settings)
        return {
            "documents": [DocumentIn(id=d.id, text=d.text) for d in documents],
            "entity_types": list(self.settings.entity_types),
            "config": config,
        }

    def messages(self, documents: Sequence[Document],
                 max_tokens: int | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """The chat messages of a call on ``documents`` (as the adapter formats them, worked
        example included) and its LM config (``max_tokens``, temperature, response format)."""
        request = self._request(documents, max_tokens)
        config = request.pop("config")
        return self.adapter.format(self.predict.signature, demos=self.demos, inputs=request), config

    def _engine(self, calls: _BatchCalls) -> Any:
        """The LM's engine if it decodes several prompts together (then a batch of one document
        takes the same path: the one-document-per-call baseline runs the same code)."""
        engine = getattr(dspy.settings.lm, "engine", None)
        return engine if self.layout == "parallel" and hasattr(engine, "complete_many") else None

    def forward(self, documents: Sequence[Document], max_tokens: int | None = None) -> dspy.Prediction:
        """Extract ``documents``; ``max_tokens`` defaults to :meth:`max_tokens`."""
        calls = _BatchCalls(self, documents, max_tokens)
        if (engine := self._engine(calls)) is not None:
            calls.together(engine)
            return calls.result()
        with dspy.context(adapter=self.adapter):
            while (kwargs := calls.next_call()) is not None:
                try:
                    with track_usage() as tracker:
                        prediction = self.predict(**kwargs, demos=self.demos)
                except Exception as exc:  # noqa: BLE001 - earlier answers are kept, see failed()
                    calls.failed(exc)
                    continue
                calls.accept_usage(prediction, tracker)
        return calls.result()

    async def aforward(self, documents: Sequence[Document], max_tokens: int | None = None) -> dspy.Prediction:
        calls = _BatchCalls(self, documents, max_tokens)
        if (engine := self._engine(calls)) is not None:
            await asyncio.to_thread(calls.together, engine)
            return calls.result()
        with dspy.context(adapter=self.adapter):
            while (kwargs := calls.next_call()) is not None:
                try:
                    with track_usage() as tracker:
                        prediction = await self.predict.acall(**kwargs, demos=self.demos)
                except Exception as exc:  # noqa: BLE001
                    calls.failed(exc)
                    continue
                calls.accept_usage(prediction, tracker)
        return calls.result()


def to_result(batch: DocumentBatch, validated: ValidatedBatch, usage: tuple[int | None, int | None]) -> BatchExtractionResult:
    """A :class:`BatchExtractionResult` for the executor: missing ids are simply absent."""
    return BatchExtractionResult(
        batch.batch_id,
        per_document_entities=validated.entities,
        per_document_relationships=validated.relationships,
        success_status=not validated.missing_ids,
        error_message=_missing_message(validated),
        tokens_in=usage[0],
        tokens_out=usage[1],
        validation=validated.counts,
    )


def _missing_message(validated: ValidatedBatch) -> str | None:
    """Why documents are missing from a reply, in words a failure reason can carry."""
    if not validated.missing_ids:
        return None
    counts, parts = validated.counts, [f"no usable record for {validated.missing_ids[:5]}"]
    if validated.unknown:
        parts.append(f"the reply named ids that were not asked for: {validated.unknown[:5]}")
    if counts.malformed_records:
        parts.append(f"{counts.malformed_records} records without an id or a list of entities")
    return "; ".join(parts)
