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


def cmd_chaos(args: argparse.Namespace) -> int:
    from toolkit.chaos import FakeProvider, Faults, default_policy, run_chaos

    if args.fault:
        faults = Faults.only(args.fault, 1.0 if args.fault_rate is None else args.fault_rate)
    else:
        faults = Faults.transient(0.2 if args.fault_rate is None else args.fault_rate)
    documents = synthetic_documents(args.docs, seed=args.seed)
    batches = Packer(PackingSettings(max_docs=args.max_docs)).pack(documents).batches
    provider = FakeProvider(faults, requests_per_minute=args.rpm, tokens_per_minute=args.tpm, seed=args.seed)
    policy = default_policy(args.concurrency, args.rpm, args.tpm, args.seed)
    summary, stopped = run_chaos(batches, provider, policy, progress=None if not args.json else False)
    summary["faults"] = {k: v for k, v in vars(faults).items() if v}
    _print_report(summary, args.json)
    if stopped is not None:
        print(f"error: run stopped: {stopped}", file=sys.stderr)
        return 3
    return 0 if summary["lost"] == 0 and summary["duplicated"] == 0 else 1


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

    chaos = sub.add_parser("chaos", help="run the executor against a fault-injecting fake provider (virtual time)")
    chaos.add_argument("--docs", type=int, default=10_000)
    chaos.add_argument("--fault-rate", type=float, help="share of calls that fail (default 0.2, or 1.0 with --fault)")
    chaos.add_argument("--fault", help="inject only this fault (401, 429, 500, timeout, malformed, ...)")
    chaos.add_argument("--max-docs", type=int, default=10)
    chaos.add_argument("--concurrency", default="auto:16", help="N (fixed) or auto[:MAX] (adaptive)")
    chaos.add_argument("--rpm", type=int, default=500, help="requests per minute (client and server)")
    chaos.add_argument("--tpm", type=int, default=200_000, help="tokens per minute (client and server)")
    chaos.add_argument("--seed", type=int, default=0)
    chaos.add_argument("--json", action="store_true")
    chaos.set_defaults(func=cmd_chaos)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (CorpusError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
