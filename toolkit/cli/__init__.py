"""Command line: ``python -m toolkit COMMAND`` (see ``--help``). Each module of this package adds
its commands (``register``): a new command is a new function and its options in one place."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from toolkit.cli import _jobs as jobs, _measure as measure, _serve as serve
from toolkit.core import redact
from toolkit.corpora import CorpusError
from toolkit.execution import RunFailed
from toolkit.lm import WeightsError
from toolkit.store import StoreError


def build_parser() -> argparse.ArgumentParser:
    description = "batchx-toolkit: batched LLM entity extraction; `COMMAND --help` for each"
    parser = argparse.ArgumentParser(prog="python -m toolkit", description=description)
    sub = parser.add_subparsers(dest="command", required=True)
    jobs.register(sub)
    measure.register(sub)
    serve.register(sub)
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
