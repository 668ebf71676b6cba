"""Reply parsing: :class:`BatchJSONAdapter` formats the prompt compactly and hands back the raw
per-document records (:func:`parse_reply`) for validation; a reply with no records raises
:class:`ReplyParseError`, a parse error to DSPy and a malformed reply to the executor."""

from __future__ import annotations

import json
import re
import textwrap
from dataclasses import dataclass
from typing import Any

import dspy
import json_repair
from dspy.utils.exceptions import AdapterParseError, DSPyError
from pydantic import BaseModel

from toolkit.core import normalise
from toolkit.execution import MalformedReply
from toolkit.extraction._prompt import BatchExtraction


class ReplyParseError(MalformedReply, AdapterParseError):
    """A reply with no list of per-document records, even after repair. A :class:`MalformedReply`
    to the executor (retried, like any malformed reply), DSPy's ``AdapterParseError`` to DSPy
    (its adapters re-raise it; ``lm_response`` holds the reply). ``str()`` is the short message
    alone: it becomes the documents' failure reason."""

    def __init__(self, message: str, lm_response: str = "",
                 signature: type[dspy.Signature] = BatchExtraction) -> None:
        DSPyError.__init__(self, message)
        self.adapter_name = "BatchJSONAdapter"
        self.signature, self.lm_response, self.parsed_result = signature, lm_response, None


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
    fence or after DSPy's ``[[ ## results ## ]]`` field marker. Raises :class:`ReplyParseError`
    when nothing usable remains.
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
        raise ReplyParseError(f"reply has no list of per-document results: {text[:200]!r}", text)
    return RawReply(items=data, repaired=repaired, text=text)


class BatchJSONAdapter(dspy.JSONAdapter):
    """DSPy's JSON adapter with a compact output description, a per-call schema (given by the
    caller) and a parse that keeps the raw records for :func:`validate_reply` instead of failing
    the whole batch on one bad record. DSPy's default spells out the pydantic schema in the prompt
    (about 600 tokens); the schema is enforced by structured output instead."""

    def __init__(self, relationships: bool = True) -> None:
        super().__init__()
        self.relationships = relationships

    def format_system_message(self, signature: type[dspy.Signature]) -> str:
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

    def user_message_output_requirements(self, signature: type[dspy.Signature]) -> str:
        return 'Respond with one JSON object {"results": [...]}.'

    def _prepare_response_format(self, lm: dspy.BaseLM, lm_kwargs: dict[str, Any],
                                 signature: type[dspy.Signature]) -> None:
        """Keep the caller's per-batch schema (dropped where the LM takes no response format);
        DSPy's own (the signature's schema) otherwise. DSPy 3.4 has no public hook for this step:
        :meth:`dspy.JSONAdapter.__call__` (and ``acall``) calls this one before every call; the
        DSPy range is pinned and tests/test_dspy_seam.py fails if the hook goes."""
        if "response_format" in lm_kwargs:
            if "response_format" not in lm.supported_params:
                lm_kwargs.pop("response_format")
            return
        super()._prepare_response_format(lm, lm_kwargs, signature)

    def format_assistant_message_content(self, signature: type[dspy.Signature], outputs: dict[str, Any],
                                         missing_field_message: str | None = None) -> str:
        """Demo answers as compact JSON (the model copies their layout: indentation costs tokens)."""
        exclude = None if self.relationships else {"relationships"}
        records = [r.model_dump(exclude=exclude) if isinstance(r, BaseModel) else r
                   for r in outputs.get("results") or []]
        return json.dumps({"results": records}, ensure_ascii=False)

    def parse(self, signature: type[dspy.Signature], completion: str) -> dict[str, Any]:
        """The reply's raw records (:func:`parse_reply`): validated later, against the batch."""
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
