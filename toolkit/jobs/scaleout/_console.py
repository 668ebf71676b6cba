"""The driver's console during a run on Ray: its standard output kept for results.

Ray's driver prints what the raylet reports (a worker that died unexpectedly: "(raylet) A worker
died or was killed ...", many lines) to ``sys.stdout``, whatever ``log_to_driver`` says, from a
thread that lives as long as Ray does. A command that prints one JSON object there
(``extract --runner ray --json``, ``chaos --runner ray --json``) runs inside
:func:`ray_output_to_stderr`."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def ray_output_to_stderr() -> Iterator[None]:
    """While the block runs, what is written to standard output goes to standard error: Python's
    ``sys.stdout`` (where Ray's driver prints) and file descriptor 1 (what the processes Ray starts
    meanwhile inherit); a Ray started in the block is shut down at its end, so nothing of it is
    printed after."""
    ray = sys.modules.get("ray")
    running = ray is not None and ray.is_initialized()
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        with contextlib.redirect_stdout(sys.stderr):
            try:
                yield
            finally:
                ray = sys.modules.get("ray")
                if not running and ray is not None and ray.is_initialized():
                    ray.shutdown()
                sys.stderr.flush()
    finally:
        os.dup2(saved, 1)
        os.close(saved)
