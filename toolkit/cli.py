"""Command line: ``python -m toolkit COMMAND`` (see ``--help``)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from toolkit.corpora import CorpusError, dedupe, load_corpus, synthetic_documents
from toolkit.packer import STRATEGIES, Packer, PackingSettings


def _print_report(report: dict[str, Any], as_json: bool) -> None:
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


def cmd_pack(args: argparse.Namespace) -> int:
    settings = PackingSettings(
        token_budget=args.budget,
        max_docs=args.max_docs,
        min_docs=args.min_docs,
        strategy=args.strategy,
        model=args.model,
    )
    start = time.perf_counter()
    if args.synthetic is not None:
        documents = synthetic_documents(args.synthetic, seed=args.seed)
        source = f"synthetic:{args.synthetic}"
    else:
        documents = list(load_corpus(args.corpus))
        source = str(args.corpus)
    documents, skipped = dedupe(documents)
    load_seconds = time.perf_counter() - start
    result = Packer(settings).pack(documents)
    report = {"corpus": source, "load_seconds": load_seconds, "duplicates_skipped": len(skipped), **result.report()}
    _print_report(report, args.json)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m toolkit", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    pack = sub.add_parser("pack", help="pack a corpus into token-budget batches and report")
    source = pack.add_mutually_exclusive_group(required=True)
    source.add_argument("--corpus", help="JSONL or PubTator file, or a bundled sample name (sample)")
    source.add_argument("--synthetic", type=int, metavar="N", help="N synthetic documents of varied length")
    pack.add_argument("--budget", type=int, default=8192, help="tokens per call, prompt and output included")
    pack.add_argument("--max-docs", type=int, default=10)
    pack.add_argument("--min-docs", type=int, default=1)
    pack.add_argument("--strategy", choices=STRATEGIES, default="fifo")
    pack.add_argument("--model", default="gpt-3.5-turbo", help="model whose tokenizer counts tokens")
    pack.add_argument("--seed", type=int, default=0, help="seed of --synthetic")
    pack.add_argument("--json", action="store_true", help="print one JSON object")
    pack.set_defaults(func=cmd_pack)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (CorpusError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
