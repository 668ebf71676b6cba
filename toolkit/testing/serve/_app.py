"""The Starlette app: chat completions, files and batches (OpenAI), messages and message batches
(Anthropic), each with or without the ``/v1`` prefix, and the admin endpoints a test or a bench
drives:

* ``GET /_admin/stats``: the log and its figures (:meth:`~toolkit.testing.serve._stats.Stats.summary`);
* ``POST /_admin/reset``: a fresh server (no log, empty windows and cache, no queued fault);
* ``POST /_admin/faults`` ``{"kind": "500", "count": 2, "seconds": null}``: the next ``count``
  admitted calls answer that fault; ``GET`` lists the queue.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from toolkit.testing.serve._anthropic import AnthropicWire
from toolkit.testing.serve._emulator import Emulator, ServeSettings, dumps
from toolkit.testing.serve._files import Files, not_found
from toolkit.testing.serve._message_batches import MessageBatches
from toolkit.testing.serve._openai import OpenAIWire
from toolkit.testing.serve._wire import Wire

_TRANSPORT = "toolkit.transport"  # the scope key where the connection's transport is kept


class _Transported:
    """Keeps the connection's transport in the scope, so a route can drop the connection
    (uvicorn's ``send`` is a method of its request cycle, which holds the transport)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope[_TRANSPORT] = getattr(getattr(send, "__self__", None), "transport", None)
        await self.app(scope, receive, send)


async def _drop(request: Request) -> Response:
    """Close the connection without an answer (the response returned is never sent)."""
    transport = request.scope.get(_TRANSPORT)
    if transport is None:
        raise RuntimeError("this ASGI server gives no transport: a connection cannot be dropped")
    transport.close()
    await asyncio.sleep(0)  # the server sees the connection lost, and sends nothing more
    return Response(status_code=500)


def build_app(settings: ServeSettings | None = None, batches: Any | None = None) -> ASGIApp:
    """The server's ASGI app for ``settings``; ``batches``: the store behind OpenAI's files and
    batches endpoints and, where it has them, Anthropic's Message Batches (None: they answer 404)."""
    emulator = Emulator(settings or ServeSettings())

    def chat(wire: Wire) -> Any:
        async def handle(request: Request) -> Response:
            try:
                body = json.loads(await request.body())
            except ValueError:
                return JSONResponse(wire.error(400, "the request body is not JSON"), status_code=400)
            reply = await emulator.call(wire, body)
            if reply.drop:
                return await _drop(request)
            return Response(dumps(reply.body), reply.status, reply.headers, media_type="application/json")

        return handle

    async def stats(request: Request) -> Response:
        return JSONResponse({"settings": emulator.settings.to_dict(), "profile": emulator.engine.profile.name,
                             "speed": emulator.speed, **emulator.stats.summary(emulator.limits)})

    async def reset(request: Request) -> Response:
        emulator.reset()
        return JSONResponse({"reset": True})

    async def faults(request: Request) -> Response:
        if request.method == "POST":
            try:
                spec = json.loads(await request.body())
                emulator.faults.schedule(str(spec["kind"]), int(spec.get("count", 1)), spec.get("seconds"))
            except (ValueError, KeyError, TypeError) as exc:
                return JSONResponse({"error": {"message": f"a fault is {{kind, count, seconds}}: {exc}"}}, 400)
        return JSONResponse({"queued": [asdict(f) for f in emulator.faults.queued()]})

    async def missing(request: Request, exc: Exception) -> Response:
        return not_found(f"no route {request.method} {request.url.path}")

    api = [Route("/chat/completions", chat(OpenAIWire()), methods=["POST"]),
           Route("/messages", chat(AnthropicWire()), methods=["POST"]), *Files(batches).routes(),
           *MessageBatches(batches).routes()]
    admin = [Route("/_admin/stats", stats, methods=["GET"]), Route("/_admin/reset", reset, methods=["POST"]),
             Route("/_admin/faults", faults, methods=["GET", "POST"])]
    app = Starlette(routes=[*api, *admin, Mount("/v1", routes=api)], exception_handlers={404: missing, 405: missing})
    return _Transported(app)
