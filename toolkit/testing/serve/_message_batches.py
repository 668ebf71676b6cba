"""Anthropic's Message Batches endpoints over a store that has them (in this project
:class:`toolkit.jobs.batchapi._emulated.EmulatedMessageBatches`, which also keeps OpenAI's files and
batches): ``POST /messages/batches`` (``{"requests": [{"custom_id", "params"}]}``), ``GET
/messages/batches`` (a page, newest first: ``after_id``, ``limit`` default 20), ``GET
/messages/batches/{id}`` and ``GET /messages/batches/{id}/results`` (JSONL, once ended). Errors
are Anthropic's (``{"type": "error", "error": {"type": "not_found_error", ...}}``)."""

from __future__ import annotations

import re
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from toolkit.testing.serve._anthropic import AnthropicWire
from toolkit.testing.serve._files import BadRequest, Method, json_body, limit_of, store_handler

CUSTOM_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")  # what Anthropic accepts as a request's custom_id


def check_requests(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The requests of a create body, as Anthropic checks them (:class:`BadRequest` otherwise):
    a non-empty list of ``{"custom_id", "params"}``, custom ids valid and distinct."""
    requests = body.get("requests")
    if not isinstance(requests, list) or not requests:
        raise BadRequest("requests: a non-empty list is required")
    seen: set[str] = set()
    for n, request in enumerate(requests):
        if not isinstance(request, dict) or not isinstance(request.get("params"), dict):
            raise BadRequest(f"requests.{n}: an object with custom_id and params is required")
        cid = request.get("custom_id")
        if not isinstance(cid, str) or not CUSTOM_ID.fullmatch(cid):
            raise BadRequest(f"requests.{n}.custom_id: 1 to 64 letters, digits, '_' or '-' are required")
        if cid in seen:
            raise BadRequest(f"requests.{n}.custom_id: {cid!r} is used by another request of this batch")
        seen.add(cid)
    return requests


class MessageBatches:
    """The endpoints over ``store`` (None, or a store without Message Batches: every route answers 404)."""

    def __init__(self, store: Any | None) -> None:
        self.store = store if hasattr(store, "create_message_batch") else None

    def routes(self) -> list[Route]:
        def route(path: str, method: Method, verb: str) -> Route:
            missing = "this server keeps no message batches (serve it with a batch store: --state)"
            return Route(path, store_handler(self.store, method, AnthropicWire(), missing), methods=[verb])

        return [route("/messages/batches", self._create, "POST"), route("/messages/batches", self._list, "GET"),
                route("/messages/batches/{id}", self._retrieve, "GET"),
                route("/messages/batches/{id}/results", self._results, "GET")]

    @staticmethod
    async def _create(request: Request, store: Any) -> Response:
        requests = check_requests(await json_body(request))
        return JSONResponse(await run_in_threadpool(store.create_message_batch, requests))

    @staticmethod
    async def _list(request: Request, store: Any) -> Response:
        after, limit = request.query_params.get("after_id"), limit_of(request, 20, 1000)
        return JSONResponse(await run_in_threadpool(store.list_message_batches, after, limit))

    @staticmethod
    async def _retrieve(request: Request, store: Any) -> Response:
        return JSONResponse(await run_in_threadpool(store.retrieve_message_batch, request.path_params["id"]))

    @staticmethod
    async def _results(request: Request, store: Any) -> Response:
        try:
            data = await run_in_threadpool(store.message_batch_results, request.path_params["id"])
        except ValueError as exc:  # not ended yet
            raise BadRequest(f"{exc}: its results are ready once its processing_status is ended") from None
        return Response(data, media_type="application/binary")
