"""``serve``: the provider emulator over HTTP (:mod:`toolkit.testing.serve`) in the foreground."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any


def _rate(text: str) -> tuple[str, float]:
    kind, _, rate = text.partition("=")
    try:
        return kind.strip(), float(rate)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a fault rate is KIND=P (e.g. server_error=0.05), not {text!r}") from None


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from toolkit.jobs.batchapi import EmulatedMessageBatches
        from toolkit.lm import EmulatedEngine
        from toolkit.testing.serve import EmulatorServer, ServeSettings
    except ImportError as exc:
        print(f"error: serve needs Starlette and uvicorn ({exc.name} is missing): pip install starlette uvicorn",
              file=sys.stderr)
        return 2
    settings = ServeSettings(profile=args.profile, rpm=args.rpm, tpm=args.tpm, itpm=args.itpm, otpm=args.otpm,
                             window=args.window, retry_after=args.retry_after, retry_after_ms=args.retry_after_ms,
                             faults=dict(args.fault_rate), hold_seconds=args.hold,
                             prompt_cache=not args.no_prompt_cache, seed=args.seed)
    profile = settings.load()
    batches = EmulatedMessageBatches(EmulatedEngine(profile, seed=args.seed), args.state, args.turnaround,
                                     wall_clock=True)
    server = EmulatorServer(settings, batches, args.port).start()
    limits = settings.limits(profile)
    print(f"emulated {profile.name} at speed {profile.speed:g} on {server.url}: chat/completions, files, batches "
          f"(OpenAI), messages, messages/batches (Anthropic); limits {limits.rpm} requests and {limits.tpm} tokens "
          f"per {limits.window:g} s; "
          f"stats at http://127.0.0.1:{server.port}/_admin/stats; Ctrl-C stops", flush=True)
    if threading.current_thread() is threading.main_thread():
        # a service manager's stop, and the only one a background job hears (its shell ignores SIGINT for it)
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        server.wait()
    except KeyboardInterrupt:
        server.stop()
    return 0


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM stops the server as Ctrl-C does."""
    raise KeyboardInterrupt


def register(sub: Any) -> None:
    """Add ``serve`` to the ``python -m toolkit`` subparsers ``sub``."""
    serve = sub.add_parser("serve", help="an emulated provider over HTTP: OpenAI chat completions, files and batches, "
                                         "Anthropic messages and message batches, with rate limits, their headers and "
                                         "faults")
    serve.add_argument("--profile", default="hosted-api", help="emulated profile NAME[@SPEED] or a profile JSON")
    serve.add_argument("--port", type=int, default=8765, help="port on 127.0.0.1 (0: a free one)")
    serve.add_argument("--rpm", type=int, help="requests per window (default: the profile's)")
    serve.add_argument("--tpm", type=int, help="tokens per window, prompt plus max_tokens (default: the profile's)")
    serve.add_argument("--itpm", type=int, help="input tokens per window (Anthropic's split limit; default none)")
    serve.add_argument("--otpm", type=int, help="output tokens (max_tokens) per window (default none)")
    serve.add_argument("--window", type=float, help="window seconds (default: 60 at the profile's speed)")
    serve.add_argument("--retry-after", action="store_true", help="add retry-after (seconds) to OpenAI's 429s")
    serve.add_argument("--retry-after-ms", action="store_true", help="add retry-after-ms to OpenAI's 429s")
    serve.add_argument("--fault-rate", type=_rate, action="append", default=[], metavar="KIND=P",
                       help="inject a fault in this share of admitted calls (repeatable): server_error, overloaded, "
                            "timeout, malformed_body, drop, rate_limit, rate_limit_retry_after, unauthorized, "
                            "context_length, malformed, truncated, missing_ids, extra_ids")
    serve.add_argument("--hold", type=float, help="seconds a timeout fault holds a call (default 60 at the speed)")
    serve.add_argument("--state", help="directory keeping the files and batches of both formats (default: in memory)")
    serve.add_argument("--turnaround", type=float, default=5.0, help="seconds until a batch completes")
    serve.add_argument("--no-prompt-cache", action="store_true", help="bypass the profile's prompt cache")
    serve.add_argument("--seed", type=int, default=0)
    serve.set_defaults(func=cmd_serve)
