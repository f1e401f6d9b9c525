"""The gateway's own HTTP endpoints (status page, metrics) in front of any ASGI app: a request
to one of their paths is answered here, before the shaping middleware, so it is neither pooled
nor reported and answers even when every shard is overloaded.

>>> import asyncio
>>> async def app(scope, receive, send):
...     raise AssertionError("the endpoint answers; the app is not called")
>>> served = with_endpoints(app, {"/ping": lambda: (b"pong", "text/plain")})
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

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Any, Any], Awaitable[None]]
# The body of an endpoint and its content type, made when it is requested.
Endpoint = Callable[[], tuple[bytes, str]]


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
        body, content_type = endpoint()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", content_type.encode()),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return serve
