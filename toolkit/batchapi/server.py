"""A local test server of OpenAI's files and batches API, answered by the emulated provider.

``python -m toolkit.batchapi.server --port 8765 --state DIR`` (or :func:`start_server` in a test)
serves on 127.0.0.1 the endpoints LiteLLM's OpenAI client uses: ``POST /v1/files`` (multipart
upload), ``GET /v1/files/{id}``, ``GET /v1/files/{id}/content``, ``POST /v1/batches``,
``GET /v1/batches/{id}`` and ``POST /v1/batches/{id}/cancel`` (the ``/v1`` prefix optional).
Behind them is :class:`~toolkit.batchapi.emulated.EmulatedBatches` on the wall clock, its state in
``DIR``: a restarted server knows its files and batches. Point ``extract --mode batch-api
--api-base http://127.0.0.1:PORT/v1`` at it for a demo.
"""

from __future__ import annotations

import argparse
import email.parser
import email.policy
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from toolkit.batchapi.emulated import EmulatedBatches, LineFaults

_ROUTES = (
    ("POST", re.compile(r"/files"), "upload"),
    ("GET", re.compile(r"/files/(?P<id>[\w-]+)/content"), "content"),
    ("GET", re.compile(r"/files/(?P<id>[\w-]+)"), "file"),
    ("POST", re.compile(r"/batches"), "create"),
    ("GET", re.compile(r"/batches/(?P<id>[\w-]+)"), "retrieve"),
    ("POST", re.compile(r"/batches/(?P<id>[\w-]+)/cancel"), "cancel"),
)


def _multipart(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """The parts of a ``multipart/form-data`` body: name -> (filename, bytes)."""
    head = f"Content-Type: {content_type}\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    return {part.get_param("name", header="content-disposition"): (part.get_filename(), part.get_payload(decode=True))
            for part in message.iter_parts()}


class _Handler(BaseHTTPRequestHandler):
    server: BatchServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
        pass

    def _send(self, status: int, payload: Any, raw: bytes | None = None) -> None:
        data = raw if raw is not None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream" if raw is not None else "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _route(self, method: str) -> None:
        path = self.path.split("?", 1)[0].removeprefix("/v1")
        for verb, pattern, name in _ROUTES:
            match = pattern.fullmatch(path)
            if verb == method and match:
                try:
                    status, payload, raw = getattr(self, f"_{name}")(**match.groupdict())
                except KeyError as exc:
                    status, payload, raw = 404, {"error": {"message": f"no such object: {exc}", "type": "invalid_request_error"}}, None
                return self._send(status, payload, raw)
        self._send(404, {"error": {"message": f"no route {method} {self.path}", "type": "invalid_request_error"}})

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self._route("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._route("POST")

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _upload(self) -> tuple[int, Any, None]:
        parts = _multipart(self.headers["Content-Type"], self._body())
        name, data = parts["file"]
        purpose = parts.get("purpose", (None, b"batch"))[1].decode()
        batches = self.server.batches
        file_id = batches.upload(name or "upload.jsonl", data, purpose)
        return 200, batches.files[file_id], None

    def _file(self, id: str) -> tuple[int, Any, None]:  # noqa: A002
        return 200, self.server.batches.files[id], None

    def _content(self, id: str) -> tuple[int, None, bytes]:  # noqa: A002
        return 200, None, self.server.batches.content(id)

    def _create(self) -> tuple[int, Any, None]:
        request = json.loads(self._body() or b"{}")
        return 200, self.server.batches.create_batch(request["input_file_id"], request.get("metadata")), None

    def _retrieve(self, id: str) -> tuple[int, Any, None]:  # noqa: A002
        return 200, self.server.batches.retrieve_batch(id), None

    def _cancel(self, id: str) -> tuple[int, Any, None]:  # noqa: A002
        return 200, self.server.batches.cancel_batch(id), None


class BatchServer(ThreadingHTTPServer):
    """The HTTP server; ``batches`` its :class:`EmulatedBatches`; ``url`` its ``/v1`` base."""

    daemon_threads = True

    def __init__(self, batches: EmulatedBatches, port: int = 0) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.batches = batches
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        if self.thread is not None:
            self.thread.join(5)


def start_server(state_dir: str | Path, lm: str = "emulated:hosted-api", turnaround: float = 0.2,
                 faults: LineFaults | None = None, port: int = 0) -> BatchServer:
    """A server on 127.0.0.1 (``port`` 0: a free one) in a background thread, answering from the
    emulated provider of ``lm``; its batches finish ``turnaround`` seconds after creation."""
    from toolkit.lm import resolve_lm

    engine = resolve_lm(lm).engine
    server = BatchServer(EmulatedBatches(engine, state_dir, turnaround, faults, wall_clock=True), port)
    server.thread = threading.Thread(target=server.serve_forever, name="batch-api-server", daemon=True)
    server.thread.start()
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m toolkit.batchapi.server", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--state", default=".batch-api-server", help="directory keeping files and batches")
    parser.add_argument("--lm", default="emulated:hosted-api", help="the emulated profile that answers")
    parser.add_argument("--turnaround", type=float, default=5.0, help="seconds until a batch completes")
    args = parser.parse_args(argv)
    server = start_server(args.state, args.lm, args.turnaround, port=args.port)
    print(f"batch API on {server.url} (state in {args.state}); Ctrl-C stops", flush=True)
    try:
        server.thread.join()
    except KeyboardInterrupt:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
