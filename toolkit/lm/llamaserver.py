"""llama.cpp's own ``llama-server`` (continuous batching over ``--parallel N`` slots) on 127.0.0.1,
started from the repository on any GGUF file the local model can run, for ``--lm openai/NAME
--api-base URL`` (bench, eval, extract).

The binary is ``$BATCHX_LLAMA_SERVER``, else ``<cache>/bin/llama-server`` (built once by
``bash scripts/build-llama-server`` from the llama.cpp source that llama-cpp-python 0.3.36
vendors), else one on ``PATH``. From a shell::

    python -m toolkit.lm.llamaserver --model qwen2.5-1.5b --parallel 4   # prints the --lm and --api-base to use
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from toolkit.core import cache_dir
from toolkit.lm._weights import WeightsError, locate


def binary() -> Path:
    """The ``llama-server`` to run (see the module docstring), or a one-line error saying how to build it."""
    if env := os.environ.get("BATCHX_LLAMA_SERVER"):
        return Path(env).expanduser()
    built = cache_dir() / "bin" / "llama-server"
    if built.exists():
        return built
    if found := shutil.which("llama-server"):
        return Path(found)
    raise WeightsError(f"llama-server not found (looked in {built} and on PATH): run `bash scripts/build-llama-server`")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class LlamaServer:
    """``llama-server --model FILE --parallel N --kv-unified`` on ``127.0.0.1:port`` (a free port by
    default), its log in ``log``; :meth:`start` waits for ``/health``. A context manager: the
    process it started is stopped on exit. ``alias`` is the model name clients send
    (``--lm openai/ALIAS``); ``model`` is anything ``local:`` takes (a registered name, a path,
    ``hf:...``)."""

    def __init__(self, model: str | None = None, parallel: int = 4, port: int | None = None,
                 ctx_size: int = 16384, threads: int | None = None, alias: str = "batchx-local",
                 log: str | Path | None = None, extra: tuple[str, ...] = ()) -> None:
        self.weights = locate(model)
        self.parallel, self.port, self.alias = parallel, port or free_port(), alias
        self.ctx_size, self.threads, self.extra = ctx_size, threads or os.cpu_count() or 1, extra
        self.log = Path(log) if log else cache_dir() / "llama-server.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The OpenAI-compatible base URL (``--api-base``)."""
        return f"http://127.0.0.1:{self.port}/v1"

    def command(self) -> list[str]:
        return [str(binary()), "--model", str(self.weights.path), "--alias", self.alias, "--host", "127.0.0.1",
                "--port", str(self.port), "--parallel", str(self.parallel), "--kv-unified", "--ctx-size",
                str(self.ctx_size), "--threads", str(self.threads), "--no-webui", *self.extra]

    def start(self, timeout: float = 300.0) -> LlamaServer:
        command = self.command()
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"llama-server exited with {self.process.returncode}: see {self.log}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=5) as reply:
                    if reply.status == 200:
                        return self
            except OSError:  # not listening yet, or 503 while the model loads
                time.sleep(0.25)
        self.stop()
        raise TimeoutError(f"llama-server did not become healthy within {timeout:.0f} s: see {self.log}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)

    def __enter__(self) -> LlamaServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m toolkit.lm.llamaserver",
                                     description="start llama-server on 127.0.0.1 and print the --lm and --api-base")
    parser.add_argument("--model", help="what local: takes: a registered name, a GGUF path, hf:ORG/REPO/FILE.gguf")
    parser.add_argument("--parallel", type=int, default=4, help="slots (requests decoded together)")
    parser.add_argument("--port", type=int, help="default: a free port")
    parser.add_argument("--ctx-size", type=int, default=16384, help="KV cells, shared by the slots")
    parser.add_argument("--alias", default="batchx-local", help="the model name clients send")
    args = parser.parse_args(argv)
    try:
        server = LlamaServer(args.model, args.parallel, args.port, args.ctx_size, alias=args.alias).start()
    except (WeightsError, RuntimeError, TimeoutError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"--lm openai/{server.alias} --api-base {server.url}  (log: {server.log}; Ctrl-C stops it)", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stopped like Ctrl-C: the server goes too
    try:
        server.process.wait()  # type: ignore[union-attr]
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
