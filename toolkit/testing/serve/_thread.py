"""The server in a background thread (uvicorn on 127.0.0.1), for tests, benches and ``python -m
toolkit serve``. The handle talks to its own admin endpoints over HTTP, as a bench in another
process would."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from typing import Any

from toolkit.testing.serve._app import build_app
from toolkit.testing.serve._emulator import ServeSettings

HOST = "127.0.0.1"


def _uvicorn(app: Any, port: int) -> Any:
    import uvicorn

    config = uvicorn.Config(app, host=HOST, port=port, loop="asyncio", lifespan="off", log_level="warning",
                            access_log=False, timeout_graceful_shutdown=1, backlog=4096)
    return uvicorn.Server(config)


class EmulatorServer:
    """A running server: ``url`` its ``/v1`` base, ``batches`` its batch store (or None).
    A context manager: ``with serve_in_thread(...) as server:`` stops it on the way out."""

    def __init__(self, settings: ServeSettings | None = None, batches: Any | None = None, port: int = 0) -> None:
        self.settings = settings or ServeSettings()
        self.batches = batches
        self.port = port
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/v1"

    def start(self, timeout: float = 10.0) -> EmulatorServer:
        """Serve in a daemon thread; returns once it listens (OSError if it cannot)."""
        self._server = _uvicorn(build_app(self.settings, self.batches), self.port)
        self._thread = threading.Thread(target=self._server.run, name="emulator-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise OSError(f"the emulator could not serve on {HOST}:{self.port}")
            time.sleep(0.01)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)

    def wait(self) -> None:
        """Block until the server stops (Ctrl-C interrupts the wait: then :meth:`stop` it)."""
        while self._thread is not None and self._thread.is_alive():
            self._thread.join(0.5)

    def __enter__(self) -> EmulatorServer:
        return self if self._server is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stats(self) -> dict[str, Any]:
        """``GET /_admin/stats``: calls, answered, 429s sent, faults, peaks per window, the log."""
        return self._admin("GET", "stats")

    def reset(self) -> None:
        """``POST /_admin/reset``: no log, empty windows and cache, no queued fault."""
        self._admin("POST", "reset", {})

    def queue_fault(self, kind: str, count: int = 1, seconds: float | None = None) -> None:
        """``POST /_admin/faults``: the next ``count`` admitted calls answer ``kind``."""
        self._admin("POST", "faults", {"kind": kind, "count": count, "seconds": seconds})

    def _admin(self, method: str, name: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"http://{HOST}:{self.port}/_admin/{name}", data, method=method,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())


def serve_in_thread(profile: Any = "hosted-api", *, batches: Any | None = None, port: int = 0,
                    **settings: Any) -> EmulatorServer:
    """A started :class:`EmulatorServer` of ``profile`` (``NAME[@SPEED]``, a file or a Profile)
    on 127.0.0.1 (``port`` 0: a free one); ``settings``: the other :class:`ServeSettings` fields
    (``rpm``, ``tpm``, ``window``, ``retry_after``, ``faults``, ...)."""
    return EmulatorServer(ServeSettings(profile=profile, **settings), batches, port).start()
