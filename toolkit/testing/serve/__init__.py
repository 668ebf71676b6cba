"""A provider emulator over HTTP: OpenAI's chat completions (and its files and batches) and
Anthropic's messages (and its message batches), answered by an emulated profile
(:mod:`toolkit.lm._emulated`) in real time.

The server keeps its own sliding windows of requests and tokens (charged at admission with the
prompt plus the output cap, as OpenAI does), sends the providers' rate-limit headers on every
reply and their 429s when a window is full, and injects faults by rate or on demand. Start it in
a test with :func:`serve_in_thread` (``with serve_in_thread("hosted-api@10", rpm=60) as server:``),
from the command line with ``python -m toolkit serve``.

Modules: ``_window`` (the limits and windows), ``_faults`` (fault kinds, rates and queue),
``_wire``/``_openai``/``_anthropic`` (the formats), ``_emulator`` (one call), ``_stats`` (the log),
``_files`` (files and batches), ``_message_batches`` (Anthropic's batches), ``_app`` (routes),
``_thread`` (the running server).
"""

from toolkit.testing.serve._app import build_app
from toolkit.testing.serve._emulator import DEFAULT_MAX_TOKENS, ServeSettings
from toolkit.testing.serve._faults import KINDS as FAULT_KINDS
from toolkit.testing.serve._thread import EmulatorServer, serve_in_thread
from toolkit.testing.serve._window import Limits, duration

__all__ = ["DEFAULT_MAX_TOKENS", "FAULT_KINDS", "EmulatorServer", "Limits", "ServeSettings", "build_app", "duration",
           "serve_in_thread"]
