"""OpenAI's files and batches endpoints, over a batch store the caller gives (in this project
:class:`toolkit.jobs.batchapi._emulated.EmulatedBatches` on the wall clock): ``POST /files`` (multipart
upload), ``GET /files/{id}``, ``GET /files/{id}/content``, ``POST /batches``, ``GET /batches``
(OpenAI's list object, newest first: ``after``, ``limit`` default 20), ``GET /batches/{id}``,
``POST /batches/{id}/cancel``. The store's methods run in a worker thread (a batch is answered when
it is created), so chat calls keep flowing meanwhile. :func:`store_handler` is what every batch
route shares (this module's and :mod:`~toolkit.testing.serve._message_batches`'s): no store, an unknown
object and a bad request answered in the provider's own error format."""

from __future__ import annotations

import email.parser
import email.policy
import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from toolkit.testing.serve._openai import OpenAIWire
from toolkit.testing.serve._wire import Wire

Method = Callable[[Request, Any], Awaitable[Response]]


def multipart(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """The parts of a ``multipart/form-data`` body: name -> (filename, bytes)."""
    head = f"Content-Type: {content_type}\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    parts: dict[str, tuple[str | None, bytes]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if isinstance(name, str) and isinstance(payload, bytes):
            parts[name] = (part.get_filename(), payload)
    return parts


def not_found(message: str) -> JSONResponse:
    return JSONResponse(OpenAIWire().error(404, message), status_code=404)


class BadRequest(ValueError):
    """A request the route refuses (400), in the provider's words."""


def store_handler(store: Any | None, method: Method, wire: Wire, missing: str) -> Callable[[Request], Any]:
    """A route calling ``method(request, store)``: 404 (``missing``) when there is no store or it
    does not know the object named, 400 for a :class:`BadRequest`; errors as ``wire`` writes them."""

    async def handle(request: Request) -> Response:
        if store is None:
            return JSONResponse(wire.error(404, missing), status_code=404)
        try:
            return await method(request, store)
        except KeyError as exc:
            name = request.path_params.get("id") or (exc.args[0] if exc.args else "object")
            return JSONResponse(wire.error(404, f"No such object: {name}"), status_code=404)
        except BadRequest as exc:
            return JSONResponse(wire.error(400, str(exc)), status_code=400)

    return handle


def limit_of(request: Request, default: int, most: int) -> int:
    """The ``limit`` query parameter: 1 to ``most``, ``default`` when absent."""
    text = request.query_params.get("limit")
    if text is None:
        return default
    if not text.isdigit() or not 1 <= int(text) <= most:
        raise BadRequest(f"limit must be an integer from 1 to {most}, not {text!r}")
    return int(text)


async def json_body(request: Request) -> dict[str, Any]:
    """The request's JSON object (a :class:`BadRequest` otherwise)."""
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError:
        raise BadRequest("the request body is not JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("the request body is not a JSON object")
    return body


class Files:
    """The endpoints over ``batches`` (None: this server keeps no files; every route answers 404)."""

    def __init__(self, batches: Any | None) -> None:
        self.batches = batches

    def routes(self) -> list[Route]:
        def route(path: str, method: Method, verb: str) -> Route:
            missing = "this server keeps no files or batches (serve it with a batch store: --state)"
            return Route(path, store_handler(self.batches, method, OpenAIWire(), missing), methods=[verb])

        return [route("/files", self._upload, "POST"), route("/files/{id}/content", self._content, "GET"),
                route("/files/{id}", self._file, "GET"), route("/batches", self._create, "POST"),
                route("/batches", self._list, "GET"), route("/batches/{id}", self._retrieve, "GET"),
                route("/batches/{id}/cancel", self._cancel, "POST")]

    @staticmethod
    async def _upload(request: Request, batches: Any) -> Response:
        parts = multipart(request.headers.get("content-type", ""), await request.body())
        if "file" not in parts:
            raise BadRequest("a file upload is multipart/form-data with a 'file' part")
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
        body = await json_body(request)
        if not isinstance(body.get("input_file_id"), str):
            raise BadRequest("input_file_id: a string is required")
        return JSONResponse(await run_in_threadpool(batches.create_batch, body["input_file_id"], body.get("metadata")))

    @staticmethod
    async def _list(request: Request, batches: Any) -> Response:
        after, limit = request.query_params.get("after"), limit_of(request, 20, 100)
        return JSONResponse(await run_in_threadpool(batches.list_batches, after, limit))

    @staticmethod
    async def _retrieve(request: Request, batches: Any) -> Response:
        return JSONResponse(await run_in_threadpool(batches.retrieve_batch, request.path_params["id"]))

    @staticmethod
    async def _cancel(request: Request, batches: Any) -> Response:
        return JSONResponse(await run_in_threadpool(batches.cancel_batch, request.path_params["id"]))
