"""What the commands share: table and report printing, and the extraction options."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from toolkit.core import DEMO_CHOICES, LAYOUTS

if TYPE_CHECKING:
    from toolkit.extraction import ExtractionSettings


def print_report(report: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(report, indent=2, default=str))
        return
    width = max(len(k) for k in report)
    for key, value in report.items():
        if isinstance(value, float):
            value = f"{value:,.4g}"
        elif isinstance(value, dict):
            value = json.dumps(value)
        print(f"{key:<{width}}  {value}")


def print_table(rows: list[dict[str, Any]]) -> None:
    def fmt(v: Any) -> str:
        if isinstance(v, list):  # an interval
            return "[" + ", ".join(map(fmt, v)) + "]"
        return f"{v:,.3g}" if isinstance(v, float) else str(v)

    cols = list(rows[0])
    widths = {c: max(len(c), *(len(fmt(r[c])) for r in rows)) for c in cols}
    print("  ".join(c.ljust(widths[c]) for c in cols))
    for r in rows:
        print("  ".join(fmt(r[c]).ljust(widths[c]) for c in cols))


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def extraction_settings(args: argparse.Namespace) -> ExtractionSettings:
    from toolkit.extraction import ExtractionSettings

    overrides = {"relationships": not args.no_relationships, "layout": args.layout, **prompt_overrides(args)}
    if args.types:
        types = tuple(t.strip() for t in args.types.split(",") if t.strip())
        return ExtractionSettings(entity_types=types, **overrides)
    return ExtractionSettings.preset(args.preset, **overrides)


def prompt_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The worked examples and passes the arguments ask for (:func:`add_prompt_args`)."""
    return {"demos": args.demos, "shots": args.shots, "demo_choice": args.demo_choice, "passes": args.passes,
            "program": args.program, "abbreviations": args.abbreviations}


def add_extraction_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--lm", default="local",
                        help="local | local:MODEL | local:PATH.gguf | local:hf:ORG/REPO/FILE.gguf | emulated:PROFILE | "
                             "provider/model (e.g. openai/gpt-4o-mini)")
    parser.add_argument("--api-base", help="base URL of an OpenAI-compatible server (with --lm openai/NAME)")
    add_settings_args(parser)


def add_settings_args(parser: argparse.ArgumentParser) -> None:
    """What to extract (read by :func:`extraction_settings`)."""
    parser.add_argument("--preset", default="biomedical", help="entity type preset: biomedical or general")
    parser.add_argument("--types", help="comma-separated entity types (instead of --preset)")
    parser.add_argument("--no-relationships", action="store_true", help="extract entities only")
    add_prompt_args(parser)


def add_prompt_args(parser: argparse.ArgumentParser) -> None:
    """``--layout``, and the worked example's ``--demos``/``--shots`` (every extracting command)."""
    parser.add_argument("--layout", choices=LAYOUTS, default="auto",
                        help="a batch as one packed prompt, or as one-document prompts decoded together (the "
                             "local model only); auto: parallel on the local model, packed elsewhere")
    parser.add_argument("--demos", metavar="GOLD",
                        help="annotated corpus (name, PubTator or CoNLL file) whose documents are the worked "
                             "example instead of the built-in one, e.g. ncbi-disease-train")
    parser.add_argument("--shots", type=int, default=2, help="documents drawn from --demos per pass (default 2)")
    parser.add_argument("--demo-choice", choices=DEMO_CHOICES, default="random",
                        help="how --demos are drawn: random (seed 0); coverage, documents dense in mentions of "
                             "every form; similar, for each call the documents most like its own (default random)")
    parser.add_argument("--passes", type=int, default=1,
                        help="extraction passes per batch: each further pass is a fresh extraction showing the "
                             "next --shots documents of --demos, merged per document (default 1)")
    parser.add_argument("--abbreviations", action="store_true",
                        help="add the other form of each abbreviation a document defines, 'long form (SF)', "
                             "when the model reported one of them (Schwartz & Hearst's rule)")
    parser.add_argument("--program", metavar="JSON",
                        help="a program compiled by `optimize`: its worked examples (and instructions) replace "
                             "--demos for settings of the same entity types and passes")


def add_price_arg(parser: argparse.ArgumentParser) -> None:
    """``--price``: what the run's tokens cost (read as ``args.price``)."""
    parser.add_argument("--price", metavar="MODEL|FILE",
                        help="price the tokens as this model of LiteLLM's price map, or from a price file "
                             "(default: what the LM is billed as; the local model: unpriced, cost null)")


def positive(text: str) -> int:
    """A whole number >= 1 (argparse type)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_rate_args(parser: argparse.ArgumentParser) -> None:
    """The account's rate limits, as its user knows them (else the backend's, or learned from the
    provider's replies)."""
    parser.add_argument("--rpm", type=positive, help="the account's requests per minute (default: the backend's "
                        "limits, or what the provider's replies say)")
    parser.add_argument("--tpm", type=positive, help="the account's tokens per minute, prompt plus max_tokens as "
                        "providers count them (default: as --rpm)")
