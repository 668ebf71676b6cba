"""The hosted path for real: the bench's configurations over HTTP, in real time, against the
project's provider emulator (``toolkit.testing.serve``), through the client stack a user's
``--lm openai/gpt-4o-mini --api-base URL`` takes.

    python benchmarks/hosted_http.py [--docs 3000] [--speed 10] [--window-docs 1000] [--out DIR]

The emulator runs as ``python -m toolkit serve`` in a process of its own, as a provider does.

1. ``hosted-api@SPEED`` (500 requests and 200,000 tokens a window of 60/SPEED seconds: a minute's
   limits enforced over short windows, as OpenAI quantizes them): A, C and D on ``--docs`` synthetic
   documents, limits learned from the replies' headers only; then C again with the limits said
   (``--rpm``/``--tpm``). Each configuration starts on a fresh server (empty window), and the
   server's own log gives the 429s it sent and whether every window held.
2. A minute-long window (60 requests and 100,000 tokens a minute, real time; the latencies of
   ``hosted-api@SPEED``): C on ``--window-docs`` documents, limits learned.

Prints and writes ``results.json``: per run, seconds, documents per minute, the share of the
limits' bound (from the tokens the client was charged), the 429s seen by the client and sent by
the server, splits, failed and lost.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from toolkit.measure import BENCH_PLAN, bench

KEYS = ("config", "seconds", "extracted", "failed", "lost", "calls", "rate_limited", "splits", "bound_share",
        "docs_per_min_while_calling", "rate_limit_bound_docs_per_min", "cost_per_1k_docs")


@contextmanager
def emulator(profile: str, **limits: Any) -> Iterator[str]:
    """``python -m toolkit serve`` in a process of its own (as a provider is), on a free port; its URL."""
    options = [f"--{k}={v}" for k, v in limits.items()]
    process = subprocess.Popen([sys.executable, "-m", "toolkit", "serve", "--profile", profile, "--port", "0",
                                *options], stdout=subprocess.PIPE, text=True)
    try:
        url = re.search(r"http://127\.0\.0\.1:\d+/v1", process.stdout.readline()).group(0)
        yield url
    finally:
        # SIGTERM: a bench started in the background (nohup ... &) passes its ignored SIGINT on to it
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


def run(profile: str, config: str, docs: int, server: dict[str, Any], **said: Any) -> dict[str, Any]:
    """One configuration on a fresh server; its figures and the server's account of it."""
    plan = [c for c in BENCH_PLAN if c.name == config]
    with emulator(profile, **server) as url:
        result = bench("openai/gpt-4o-mini", "synthetic", docs, api_base=url, plan=plan, settle=0, **said)
        stats = httpx.get(url.removesuffix("/v1") + "/_admin/stats").json()
    [figures] = result.configs
    out = {k: figures.to_json().get(k) for k in KEYS}
    out.update(docs_per_min=figures.extracted / figures.seconds * 60, rate_limits=figures.rate_limits,
               server_429s=stats["rate_limited"], server_calls=stats["calls"], windows_held=stats["within_limits"],
               server_limits=stats["limits"], said=said or None)
    print(json.dumps(out, default=str), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=3000)
    parser.add_argument("--speed", type=float, default=10.0)
    parser.add_argument("--window-docs", type=int, default=1000, help="documents for the minute-long window (0: skip)")
    parser.add_argument("--out", default="benchmarks/results/bench-http-hosted")
    args = parser.parse_args()
    profile = f"hosted-api@{args.speed:g}"
    start = time.time()
    runs = {name: run(profile, name, args.docs, {}) for name in ("A", "C", "D")}
    per_minute = {"rpm": int(500 * args.speed), "tpm": int(200_000 * args.speed)}
    runs["C_said"] = run(profile, "C", args.docs, {}, **per_minute)
    minute = {"rpm": 60, "tpm": 100_000, "window": 60.0}
    if args.window_docs:
        runs["C_minute"] = run(profile, "C", args.window_docs, minute)
    a, c, d = (runs[k]["seconds"] for k in "ACD")
    result = {
        "kind": "bench-http", "profile": profile, "documents": args.docs, "runs": runs,
        "speedup_c_vs_a": a / c, "speedup_d_vs_a": a / d, "speedup_c_vs_d": d / c,
        "c_said_vs_learned": runs["C_said"]["docs_per_min"] / runs["C"]["docs_per_min"],
        "minute_window": minute if args.window_docs else None, "wall_seconds": time.time() - start,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=2, default=str))
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2, default=str))


if __name__ == "__main__":
    main()
