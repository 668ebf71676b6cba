"""Scale-out measured side by side in one run: the local runner against Ray with 1 and 2 workers,
on emulated profiles run faster in real time (their latencies and rate-limit windows divided by
their speed), on the same synthetic documents.

    python benchmarks/scaleout.py [--docs 2000] [--speeds local-cpu=100,hosted-api=10:6000] [--out DIR]
    python benchmarks/scaleout.py --kill-worker-every 3 [--docs 2000] [--lm emulated:hosted-api@100] [--out DIR]

``PROFILE=SPEED[:DOCS]``: a profile's speed and, when given, its own number of documents.

``local-cpu`` serves one call at a time per process (like a model per machine): workers add
throughput. ``hosted-api`` is bound by one account's rate limits, which the Ray workers share
through one global limiter: workers cannot go past the bound, and the bench shows how close to it
they get. At 100 times its speed, hosted-api's limits would ask for hundreds of calls a second,
more than two cores of Python can prepare and parse: the bench would measure the CPU, not the
limiter; hence 10 by default for it, and 6,000 documents (two minutes: the first windows' ramp is
a smaller share of a longer run). Each emulated worker also emulates its own server, so with one
process all calls meet one server-side window and its 429s, with two they meet two: the global
limit is checked on the client side, from the recorded attempt times of all workers together.
Prints a table and writes ``results.json``.

``--kill-worker-every S``: chaos instead. The same documents run on 2 Ray workers twice, once
undisturbed and once with a worker killed every ``S`` seconds
(:func:`toolkit.jobs.scaleout.kill_workers_every`); for each: documents in the store and distinct ones,
extracted, failed, lost, calls, answers per extracted document (each recorded call's answered
documents, summed: 1.0 when no document was answered twice), kills and workers replaced. Writes
``chaos.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sqlite3
import tempfile
import threading
import time
from pathlib import Path

import ray

import toolkit
from toolkit.corpora import synthetic_documents
from toolkit.execution import max_in_window
from toolkit.jobs import RunSettings
from toolkit.lm import load_profile


def run(corpus: Path, lm: str, runner: str, workers: int, store: str) -> dict:
    start = time.perf_counter()
    result = toolkit.run(corpus, lm=lm, store=store, run_name=f"{runner}-{workers}-{time.time_ns()}",
                         settings=RunSettings(max_docs=10, runner=runner, workers=workers), progress=False)
    seconds = time.perf_counter() - start
    summary, attempts = result.summary.to_json(), result.attempts
    profile = load_profile(lm.partition(":")[2])
    times, tokens = attempts["at"].to_list(), attempts["budget_tokens"].to_list()
    ok = attempts.filter(attempts["outcome"] == "ok")
    per_call = ok["n_docs"].sum() / ok.height  # documents a successful call carried
    per_doc = ok["budget_tokens"].sum() / ok["n_docs"].sum()  # tokens charged per document
    limits = [x for x in (profile.requests_per_minute and profile.requests_per_minute * per_call,
                          profile.tokens_per_minute and profile.tokens_per_minute / per_doc) if x]
    bound = min(limits) * profile.speed if limits else None  # documents per real minute the limits allow
    docs_per_min = 60 * summary["extracted"] / seconds
    # while calls ran: from the first call's admission to the last reply (without starting Ray and its
    # workers, reading the corpus and closing the store, which a long run amortises)
    span = max(a + s for a, s in zip(times, attempts["seconds"].to_list())) - min(times)
    active = 60 * summary["extracted"] / span if span > 0 else None
    return {"lm": lm, "runner": runner, "workers": workers if runner == "ray" else 1, "seconds": seconds,
            "documents": summary["documents"], "docs_per_min": docs_per_min, "extracted": summary["extracted"],
            "lost": summary["lost"], "calls": summary["calls"], "rate_limit_bound_docs_per_min": bound,
            "bound_share": docs_per_min / bound if bound else None, "calls_seconds": span,
            "calls_docs_per_min": active, "calls_bound_share": active / bound if bound and active else None,
            "max_requests_in_window": max_in_window(times, [1] * len(times), profile.window),
            "max_tokens_in_window": max_in_window(times, tokens, profile.window),
            "requests_per_window": profile.requests_per_minute, "tokens_per_window": profile.tokens_per_minute}


def chaos_run(corpus: Path, lm: str, db: Path, every: float | None) -> dict:
    """One Ray run of ``corpus`` with a worker killed every ``every`` seconds (None: undisturbed)."""
    from toolkit.jobs.scaleout import kill_workers_every

    name, stop, killed = f"chaos-{time.time_ns()}", threading.Event(), []
    killer = threading.Thread(target=lambda: killed.extend(kill_workers_every(every, stop, run_id=name)))
    if every:
        killer.start()
    start = time.perf_counter()
    try:
        result = toolkit.run(corpus, lm=lm, store=f"sqlite:///{db}", run_name=name, progress=False,
                             settings=RunSettings(max_docs=10, runner="ray", workers=2))
    finally:
        stop.set()
        if every:
            killer.join()
    summary, attempts = result.summary.to_json(), result.attempts
    with sqlite3.connect(db) as conn:
        rows, distinct = conn.execute("SELECT COUNT(*), COUNT(DISTINCT doc_id) FROM batchx_documents WHERE run_id = ?",
                                      (name,)).fetchone()
    return {"kill_worker_every": every, "seconds": time.perf_counter() - start, "documents": summary["documents"],
            "rows": rows, "distinct_rows": distinct, "extracted": summary["extracted"], "failed": summary["failed"],
            "lost": summary["lost"], "pending": summary["pending"], "calls": summary["calls"],
            "failed_calls": int((attempts["outcome"] != "ok").sum()),
            "answers_per_document": attempts["documents_ok"].sum() / max(1, summary["extracted"]),
            "kills": len(killed), "workers_replaced": summary["workers_replaced"],
            "stop_reason": summary["stop_reason"]}


def chaos(args: argparse.Namespace, folder: Path) -> None:
    corpus = folder / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"id": d.id, "text": d.text}) + "\n"
                              for d in synthetic_documents(args.docs, seed=21)))
    rows = [chaos_run(corpus, args.lm, folder / "chaos.db", every) for every in (None, args.kill_worker_every)]
    for row in rows:
        print(json.dumps(row))
    result = {"kind": "scaleout-chaos", "lm": args.lm, "workers": 2, "machine": platform.platform(), "rows": rows}
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "chaos.json").write_text(json.dumps(result, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--speeds", default="local-cpu=100,hosted-api=10:6000", help="profile=speed[:docs],...")
    parser.add_argument("--kill-worker-every", type=float, metavar="S", help="chaos: kill a Ray worker every S seconds")
    parser.add_argument("--lm", default="emulated:hosted-api@100", help="the LM of the chaos runs")
    parser.add_argument("--out")
    args = parser.parse_args()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    folder = Path(tempfile.mkdtemp(prefix="batchx-scaleout-"))
    if args.kill_worker_every:
        return chaos(args, folder)
    rows = []
    speeds = dict(item.split("=") for item in args.speeds.split(","))
    for profile, setting in speeds.items():
        speed, _, docs = setting.partition(":")
        corpus = folder / f"corpus-{profile}.jsonl"
        corpus.write_text("".join(json.dumps({"id": d.id, "text": d.text}) + "\n"
                                  for d in synthetic_documents(int(docs or args.docs), seed=21)))
        lm = f"emulated:{profile}@{speed}"
        for runner, workers in (("local", 1), ("ray", 1), ("ray", 2)):
            rows.append(run(corpus, lm, runner, workers, f"sqlite:///{folder / 'bench.db'}"))
            print(json.dumps({k: rows[-1][k] for k in ("lm", "runner", "workers", "seconds", "docs_per_min",
                                                        "bound_share", "calls_bound_share", "lost")}))
    by = {(r["lm"].split(":")[1].split("@")[0], r["runner"], r["workers"]): r for r in rows}
    cpu1, cpu2 = by[("local-cpu", "ray", 1)], by[("local-cpu", "ray", 2)]
    result = {
        "kind": "scaleout", "documents": {p: r["documents"] for p, r in ((r["lm"], r) for r in rows)},
        "speeds": speeds, "machine": platform.platform(), "rows": rows,
        "local_cpu_2_vs_1_workers": cpu2["docs_per_min"] / cpu1["docs_per_min"],
        "local_cpu_ray2_vs_local": cpu2["docs_per_min"] / by[("local-cpu", "local", 1)]["docs_per_min"],
        "hosted_requests_within_limit": all(r["max_requests_in_window"] <= r["requests_per_window"] for r in rows
                                            if r["lm"].startswith("emulated:hosted")),
        "hosted_tokens_within_limit": all(r["max_tokens_in_window"] <= r["tokens_per_window"] for r in rows
                                          if r["lm"].startswith("emulated:hosted")),
        "hosted_ray2_bound_share": by[("hosted-api", "ray", 2)]["bound_share"],
        "hosted_ray2_calls_bound_share": by[("hosted-api", "ray", 2)]["calls_bound_share"],
    }
    for key in ("local_cpu_2_vs_1_workers", "local_cpu_ray2_vs_local", "hosted_requests_within_limit",
                "hosted_tokens_within_limit", "hosted_ray2_bound_share", "hosted_ray2_calls_bound_share"):
        print(f"{key}: {result[key]}")
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "results.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
