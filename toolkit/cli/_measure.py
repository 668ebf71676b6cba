"""Measuring: calibrate, eval, bench, plan and optimize."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from typing import TYPE_CHECKING, Any

from toolkit.cli._common import (
    add_price_arg,
    add_prompt_args,
    add_rate_args,
    add_settings_args,
    extraction_settings,
    ints,
    print_report,
    print_table,
    prompt_overrides,
)

if TYPE_CHECKING:
    from toolkit.measure import BenchResult, EvalResult


def cmd_calibrate(args: argparse.Namespace) -> int:
    from toolkit.measure import calibrate

    result = calibrate(args.lm, corpus=args.corpus, docs=args.docs, batch_sizes=args.batch_sizes,
                       out=args.out, progress=not args.json, settings=extraction_settings(args))
    print_report(result, args.json)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from toolkit.measure import eval_note, eval_table, evaluate

    result = evaluate(args.gold, lm=args.lm, limit=args.limit, max_docs=ints(args.max_docs),
                      budgets=ints(args.budgets), types=args.types.split(",") if args.types else None,
                      prompt_cache=args.warm_cache, layout=args.layout, **prompt_overrides(args),
                      resamples=args.resamples, fresh_reference=args.fresh_reference, price=args.price,
                      api_base=args.api_base, rpm=args.rpm, tpm=args.tpm)
    if not _write_and_print_json(result, args):
        print_table(eval_table(result))
        print(eval_note(result))
    return 0 if all(r.lost == 0 for r in result.configs) else 1


def cmd_bench(args: argparse.Namespace) -> int:
    from toolkit.measure import bench, bench_table

    result = bench(args.lm, args.corpus, args.docs, max_docs=args.max_docs, budget=args.budget,
                   concurrency=args.concurrency, output_tokens_per_doc=args.output_reserve,
                   types=[t.strip().upper() for t in args.types.split(",")] if args.types else None,
                   layout=args.layout, **prompt_overrides(args), price=args.price,
                   api_base=args.api_base, rpm=args.rpm, tpm=args.tpm, settle=args.settle,
                   batch_api=args.batch_api)
    if not _write_and_print_json(result, args):
        print_table(bench_table(result))
        figures = result.to_json()
        print_report({k: v for k, v in figures.items() if k.startswith(("speedup", "rate_limit", "bound", "lost"))},
                     False)
    return 0 if result.lost == 0 else 1


def cmd_optimize(args: argparse.Namespace) -> int:
    from toolkit.measure import optimize

    with contextlib.redirect_stdout(sys.stderr):  # DSPy's optimizers print their progress: stdout is the report
        result = optimize(args.gold, args.dev, lm=args.lm, out=args.out, optimizer=args.optimizer, shots=args.shots,
                          limit=args.limit or None, dev_limit=args.dev_limit or None, candidates=args.candidates,
                          types=[t.strip().upper() for t in args.types.split(",")] if args.types else None,
                          api_base=args.api_base)
    print_report(result, args.json)
    return 0


def _write_and_print_json(result: EvalResult | BenchResult, args: argparse.Namespace) -> bool:
    """An eval or bench ``result``'s files under ``--out``, and the result printed as JSON with
    ``--json`` (with the files written); True when it was (the caller prints its tables otherwise)."""
    from toolkit.measure import write_results

    files = [str(p) for p in write_results(result, args.out)] if args.out else None
    if args.json:
        print(json.dumps({**result.to_json(), **({"files": files} if files is not None else {})}, indent=2,
                         default=str))
    return bool(args.json)


def cmd_plan(args: argparse.Namespace) -> int:
    from toolkit.plan import GRID_COLUMNS, MEASURED_COLUMNS, plan, plan_summary, write_plan

    result = plan(args.calibrated or args.profile, args.corpus, max_f1_drop=args.max_f1_drop,
                  eval_results=args.eval, bench_results=args.bench,
                  modes=args.modes.split(",") if args.modes else None, documents=args.docs, deadline=args.deadline,
                  budget_usd=args.budget_usd, price=args.price, rpm=args.rpm, tpm=args.tpm)
    if args.out:
        write_plan(result, args.out)
    if args.json:
        print(json.dumps(result.to_json(), indent=2, default=str))
        return 0
    print_table([{k: r[k] for k in GRID_COLUMNS} for r in result.grid])
    if result.measured:
        print("measured (bench):")
        print_table([{k: r[k] for k in MEASURED_COLUMNS} for r in result.measured])
    print(plan_summary(result))
    return 0


def _add_calibrate(sub: Any) -> None:
    cal = sub.add_parser("calibrate", help="fit a latency profile (overhead, prompt and output tok/s) from a real run")
    cal.add_argument("--lm", default="local")
    cal.add_argument("--corpus", help="corpus name or file (default: ncbi-disease if ../shared exists, else sample)")
    cal.add_argument("--docs", type=int, default=8, help="documents to run (each batch size runs over them)")
    cal.add_argument("--batch-sizes", default="1,2,4,8", help="documents per call, comma-separated")
    add_settings_args(cal)
    cal.add_argument("--out", help="write the fitted profile JSON here (usable as --lm emulated:PATH)")
    cal.add_argument("--json", action="store_true")
    cal.set_defaults(func=cmd_calibrate)


def _add_eval(sub: Any) -> None:
    ev = sub.add_parser("eval", help="quality (P/R/F1 vs gold) and measured speedup of packing configurations")
    ev.add_argument("--gold", required=True, help="annotated corpus: PubTator or CoNLL/BIO file, or a name")
    ev.add_argument("--lm", default="local")
    ev.add_argument("--api-base", help="base URL of an OpenAI-compatible server (with --lm openai/NAME)")
    add_rate_args(ev)
    ev.add_argument("--limit", type=int, default=20, help="first N documents (0: all)")
    ev.add_argument("--max-docs", default="1,4,8", help="documents per call to compare (1 is always run)")
    ev.add_argument("--budgets", default="8192", help="token budgets to compare")
    ev.add_argument("--types", help="entity types to ask for (default: the corpus's, mapped)")
    ev.add_argument("--warm-cache", action="store_true", help="keep the local model's prompt cache on")
    ev.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples for the 95%% intervals (0: none)")
    ev.add_argument("--fresh-reference", action="store_true", help="run one document per call again even if cached")
    add_prompt_args(ev)
    add_price_arg(ev)
    ev.add_argument("--out", help="write results.json, CSV/Parquet tables and a PNG here")
    ev.add_argument("--json", action="store_true")
    ev.set_defaults(func=cmd_eval)


def _add_bench(sub: Any) -> None:
    be = sub.add_parser("bench", help="A (1 doc/call), A' (warm cache), B (packed), C (packed, concurrent), "
                                      "D (1 doc/call, concurrent), with their cost")
    be.add_argument("--lm", default="local")
    be.add_argument("--api-base", help="base URL of an OpenAI-compatible server (with --lm openai/NAME)")
    add_rate_args(be)
    be.add_argument("--settle", type=float, help="seconds between configurations of a rate-limited backend, so each "
                    "starts with the provider's window empty (default: the limits' window; 60 where learned)")
    be.add_argument("--batch-api", action=argparse.BooleanOptionalAction, default=None,
                    help="run the batch-API configuration (default: where the backend has one, not at --api-base)")
    be.add_argument("--corpus", default="ncbi-disease", help="corpus name or file, or 'synthetic'")
    be.add_argument("--docs", type=int, default=40)
    be.add_argument("--max-docs", type=int, default=10)
    be.add_argument("--budget", type=int, default=8192)
    be.add_argument("--concurrency", default="auto:16", help="configuration C's concurrency")
    be.add_argument("--output-reserve", type=int, help="output tokens allowed per document (default 256)")
    be.add_argument("--types", help="comma-separated entity types to ask for (default: the biomedical preset)")
    add_prompt_args(be)
    add_price_arg(be)
    be.add_argument("--out", help="write results.json, CSV/Parquet tables and a PNG here")
    be.add_argument("--json", action="store_true")
    be.set_defaults(func=cmd_bench)


def _add_plan(sub: Any) -> None:
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
    pl.add_argument("--docs", type=int, help="documents to plan for (default: the corpus's count)")
    add_rate_args(pl)
    pl.add_argument("--deadline", help="time allowed: 8h, 90m, 2d (the cheapest setting within it is printed)")
    pl.add_argument("--budget-usd", type=float, help="money allowed (the fastest setting within it is printed)")
    pl.add_argument("--modes", help="execution modes to consider: sync,cache,batch-api (default: all the backend has)")
    pl.add_argument("--price", help="price tokens as this model (LiteLLM's price map) or a price file "
                                    "(default: the profile's priced_as)")
    pl.add_argument("--out")
    pl.add_argument("--json", action="store_true")
    pl.set_defaults(func=cmd_plan)


def _add_optimize(sub: Any) -> None:
    op = sub.add_parser("optimize", help="compile the extractor's worked examples with a DSPy optimizer against "
                                         "strict F1 on training documents; --program applies the result")
    op.add_argument("--gold", required=True, help="annotated training documents (file or name), e.g. "
                                                  "ncbi-disease-train; never the held-out test split")
    op.add_argument("--dev", required=True, help="annotated documents that score the candidates, none of --gold's "
                                                 "(the training split again: its next documents)")
    op.add_argument("--lm", default="local")
    op.add_argument("--api-base", help="base URL of an OpenAI-compatible server (with --lm openai/NAME)")
    op.add_argument("--optimizer", choices=("bootstrap",), default="bootstrap",
                    help="bootstrap: DSPy's BootstrapFewShotWithRandomSearch (the one offered so far)")
    op.add_argument("--shots", type=int, default=2, help="demos per predictor, labelled and bootstrapped (default 2)")
    op.add_argument("--limit", type=int, default=24, help="first N training documents (0: all; default 24)")
    op.add_argument("--dev-limit", type=int, default=16, help="first N development documents (0: all; default 16)")
    op.add_argument("--candidates", type=int, default=4, help="random-search candidate programs (default 4)")
    op.add_argument("--types", help="entity types to ask for (default: the corpus's, mapped)")
    op.add_argument("--out", default="program.json", help="where to write the program (default program.json)")
    op.add_argument("--json", action="store_true")
    op.set_defaults(func=cmd_optimize)


def register(sub: Any) -> None:
    """Add this module's commands to the ``python -m toolkit`` subparsers ``sub``."""
    for add in (_add_calibrate, _add_eval, _add_bench, _add_plan, _add_optimize):
        add(sub)
