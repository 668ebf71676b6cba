"""OpenAI's files and batches endpoints, over a batch store the caller gives (in this project
:class:`toolkit.batchapi.emulated.EmulatedBatches` on the wall clock): ``POST /files`` (multipart
upload), ``GET /files/{id}``, ``GET /files/{id}/content``, ``POST /batches``, ``GET
/batches/{id}``, ``POST /batches/{id}/cancel``. The store's methods run in a worker thread (a
batch is answered when it is created), so chat calls keep flowing meanwhile."""

from __future__ import annotations

import email.parser
import email.policy
import json
from collections.abc import Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


def multipart(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """The parts of a ``multipart/form-data`` body: name -> (filename, bytes)."""
    head = f"Content-Type: {content_type}\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    return {part.get_param("name", header="content-disposition"): (part.get_filename(), part.get_payload(decode=True))
            for part in message.iter_parts()}


def not_found(message: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": "invalid_request_error", "param": None,
                                   "code": None}}, status_code=404)


class Files:
    """The endpoints over ``batches`` (None: this server keeps no files; every route answers 404)."""

    def __init__(self, batches: Any | None) -> None:
        self.batches = batches

    def routes(self) -> list[Route]:
        return [Route("/files", self._handler(self._upload), methods=["POST"]),
                Route("/files/{id}/content", self._handler(self._content), methods=["GET"]),
                Route("/files/{id}", self._handler(self._file), methods=["GET"]),
                Route("/batches", self._handler(self._create), methods=["POST"]),
                Route("/batches/{id}", self._handler(self._retrieve), methods=["GET"]),
                Route("/batches/{id}/cancel", self._handler(self._cancel), methods=["POST"])]

    def _handler(self, method: Callable[[Request, Any], Any]) -> Callable[[Request], Any]:
        async def handle(request: Request) -> Response:
            if self.batches is None:
                return not_found("this server keeps no files or batches (serve it with a batch store: --state)")
            try:
                return await method(request, self.batches)
            except KeyError as exc:
                return not_found(f"no such object: {exc}")

        return handle

    @staticmethod
    async def _upload(request: Request, batches: Any) -> Response:
        parts = multipart(request.headers["content-type"], await request.body())
        name, data = parts["file"]
        purpose = parts.get("purpose", (None, b"batch"))[1].decode()
        file_id = await run_in_threadpool(batches.upload, name or "upload.jsonl", data, purpose)
        return JSONResponse(batches.files[file_id])

    @staticmethod
    async def _file(request: Request, batches: Any) -> Response:
        return JSONResponse(batches.files[request.path_params["id"]])

    @staticmethod
    async def _content(request: Request, batches: Any) -> Response:
        data = await run_in_threadpool(batches.content, request.path_params["id"])
        return Response(data, media_type="application/octet-stream")

    @staticmethod
    async def _create(request: Request, batches: Any) -> Response:
        body = json.loads(await request.body() or b"{}")
        return JSONResponse(await run_in_threadpool(batches.create_batch, body["input_file_id"], body.get("metadata")))

    @staticmethod
    async def _retrieve(request: Request, batches: Any) -> Response:
        return JSONResponse(await run_in_threadpool(batches.retrieve_batch, request.path_params["id"]))

    @staticmethod
    async def _cancel(request: Request, batches: Any) -> Response:
        return JSONResponse(await run_in_threadpool(batches.cancel_batch, request.path_params["id"]))
