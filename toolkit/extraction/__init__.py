"""Batch entity extraction through DSPy: one call serves several documents, keyed by document id.

The signature takes ``{id, text}`` documents and the entity types and returns one record per id.
Each call sends a JSON schema built for its batch (ids and types as enums, bounded lists) where the
LM supports structured output. Replies are parsed with :mod:`json_repair` as a last resort, then
validated: unknown ids dropped, missing ids left out (the executor re-sends them), and every entity
kept only if its text occurs in its own document. An entity found only in another document of the
batch is a cross-document *leak*: counted, never stored under the wrong id.

The pieces, each a module: :mod:`~toolkit.extraction._settings` (what to extract, presets),
:mod:`~toolkit.extraction._sizing` (the output allowance), :mod:`~toolkit.extraction._prompt`
(signature, worked example, response schema), :mod:`~toolkit.extraction._adapter` (formatting and
reply parsing), :mod:`~toolkit.extraction._validation` (grounding, leaks, the executor's result)
and :mod:`~toolkit.extraction._module` (the DSPy module).
"""

from toolkit.core import normalise
from toolkit.extraction._adapter import BatchJSONAdapter, RawReply, ReplyParseError, end_repetition, parse_reply
from toolkit.extraction._demos import demo_ids, gold_demos, pass_demos, similar_demos
from toolkit.extraction._module import BatchExtractor, settle_reply
from toolkit.extraction._program import Program, load_program, save_program
from toolkit.extraction._prompt import (
    DEMO_DOCUMENTS,
    DEMO_ENTITIES,
    DEMO_RELATIONSHIPS,
    BatchExtraction,
    DocumentIn,
    DocumentOut,
    EntityOut,
    RelationshipOut,
    demo_example,
    response_schema,
)
from toolkit.extraction._settings import LAYOUTS, PRESETS, ExtractionSettings
from toolkit.extraction._sizing import OutputSizer, output_allowance, output_per_document
from toolkit.extraction._validation import ValidatedBatch, to_result, validate_reply

__all__ = [
    "BatchExtraction", "BatchExtractor", "BatchJSONAdapter", "DEMO_DOCUMENTS", "DEMO_ENTITIES", "DEMO_RELATIONSHIPS",
    "DocumentIn", "DocumentOut", "EntityOut", "ExtractionSettings", "LAYOUTS", "OutputSizer", "PRESETS", "Program",
    "RawReply", "RelationshipOut", "ReplyParseError", "ValidatedBatch", "demo_example", "demo_ids", "end_repetition",
    "gold_demos", "load_program", "normalise", "output_allowance", "output_per_document", "parse_reply", "pass_demos",
    "response_schema", "save_program", "similar_demos", "settle_reply", "to_result", "validate_reply",
]
