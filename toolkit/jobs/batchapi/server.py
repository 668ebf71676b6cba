"""OpenAI's files and batches API and Anthropic's Message Batches on a local server, answered by
the emulated provider.

The server is the project's provider emulator (:mod:`toolkit.testing.serve`), which speaks chat
completions and messages too; here it is given an
:class:`~toolkit.jobs.batchapi._emulated.EmulatedMessageBatches` (both formats) on the wall clock, its
state in a directory (a restarted server knows its files and batches). Point
``extract --mode batch-api --api-base http://127.0.0.1:PORT/v1`` at it for a demo; ``python -m
toolkit serve --state DIR`` starts the same from the command line.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from toolkit.jobs.batchapi._emulated import EmulatedMessageBatches, LineFaults
from toolkit.testing.serve import EmulatorServer, ServeSettings


def start_server(state_dir: str | Path, lm: str = "emulated:hosted-api", turnaround: float = 0.2,
                 faults: LineFaults | None = None, port: int = 0) -> EmulatorServer:
    """A server on 127.0.0.1 (``port`` 0: a free one) in a background thread, answering from the
    emulated provider of ``lm``; its batches finish ``turnaround`` seconds after creation.
    ``server.batches`` is its store, ``server.url`` its ``/v1`` base, ``server.stop()`` stops it."""
    from toolkit.lm import resolve_lm

    engine = resolve_lm(lm).engine
    batches = EmulatedMessageBatches(engine, state_dir, turnaround, faults, wall_clock=True)
    return EmulatorServer(ServeSettings(profile=engine.profile), batches, port).start()


def main(argv: list[str] | None = None) -> int:
    """``python -m toolkit.jobs.batchapi.server`` (kept for old demos; ``python -m toolkit serve`` is the command)."""
    parser = argparse.ArgumentParser(prog="python -m toolkit.jobs.batchapi.server", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--state", default=".batch-api-server", help="directory keeping files and batches")
    parser.add_argument("--lm", default="emulated:hosted-api", help="the emulated profile that answers")
    parser.add_argument("--turnaround", type=float, default=5.0, help="seconds until a batch completes")
    args = parser.parse_args(argv)
    server = start_server(args.state, args.lm, args.turnaround, port=args.port)
    print(f"batch API on {server.url} (state in {args.state}); Ctrl-C stops", flush=True)
    try:
        server.wait()
    except KeyboardInterrupt:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
