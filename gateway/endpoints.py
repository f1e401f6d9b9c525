"""The gateway's own HTTP endpoints (status page, metrics) in front of any ASGI app: a request
to one of their paths is answered here, before the shaping middleware, so it is neither pooled
nor reported and answers even when every shard is overloaded.

>>> import asyncio
>>> async def app(scope, receive, send):
...     raise AssertionError("the endpoint answers; the app is not called")
>>> ping = lambda scope: (200, b"pong", {"content-type": "text/plain"})
>>> served = with_endpoints(app, {"/ping": ping})
>>> sent = []
>>> async def send(message):
...     sent.append(message)
>>> asyncio.run(served({"type": "http", "path": "/ping"}, None, send))
>>> sent[0]["status"], sent[1]["body"]
(200, b'pong')
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

import orjson

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]
# An endpoint answers a request's scope with its status, body and headers (made when requested).
Endpoint = Callable[[Scope], tuple[int, bytes, Mapping[str, str]]]


def with_endpoints(app: ASGIApp, endpoints: Mapping[str, Endpoint]) -> ASGIApp:
    """An ASGI app that answers HTTP requests to the paths of ``endpoints`` (any method) and
    hands everything else to ``app``. Usable as Starlette middleware
    (``app.add_middleware(with_endpoints, endpoints=...)``)."""
    paths = dict(endpoints)

    async def serve(scope: Scope, receive: Any, send: Any) -> None:
        endpoint = paths.get(scope["path"]) if scope["type"] == "http" else None
        if endpoint is None:
            await app(scope, receive, send)
            return
        status, body, headers = endpoint(scope)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    *((name.lower().encode(), value.encode()) for name, value in headers.items()),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return serve


def header(scope: Scope, name: bytes) -> str:
    """The value of request header ``name`` (lower case) in ``scope``, or ``""``."""
    return next((v.decode("latin-1") for k, v in scope.get("headers", ()) if k == name), "")


def json_endpoint(answer: Callable[[], tuple[int, Any]]) -> Endpoint:
    """An endpoint answering with the status and JSON body ``answer()`` returns."""
    return lambda scope: _json(*answer())


def _json(status: int, body: Any) -> tuple[int, bytes, Mapping[str, str]]:
    return status, orjson.dumps(body), {"content-type": "application/json"}
