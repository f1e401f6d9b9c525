"""A streaming HTTP reverse proxy as an ASGI app: the sidecar's forwarding, nothing else.

Request and response bodies stream both ways in chunks (a body is never held whole);
headers pass except the hop-by-hop ones; ``X-Forwarded-For``, ``X-Forwarded-Proto`` and
``X-Forwarded-Host`` are added, and ``X-Shardshape-Shard`` when the shaping middleware around
it holds a slot (so the service may use its shard too). Connections to the upstream are kept
alive in one pool. The upstream refusing or failing the connection answers 502, an upstream
slower than ``timeout_s`` to answer answers 504, each with a short text body naming the
upstream. A client that disconnects while its request is forwarded cancels the forwarding at
once, so the slot it holds is freed.

>>> proxy = ReverseProxy("http://127.0.0.1:8080", timeout_s=5)
>>> proxy.upstream
'http://127.0.0.1:8080'
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from yarl import URL

from shardshape.gateway.pools import current_slot

log = logging.getLogger("shardshape.gateway.proxy")

SHARD_HEADER = "x-shardshape-shard"
# RFC 9110 7.6.1: connection-specific headers, never forwarded (nor any a Connection names).
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)


class ClientGone(Exception):
    """The client disconnected before its request body was read."""


def forwarded_headers(raw: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """``raw`` without hop-by-hop headers, those a ``Connection`` header names, and ``host``.

    >>> forwarded_headers([(b"connection", b"close, x-trace"), (b"x-trace", b"1"),
    ...                    (b"accept", b"*/*"), (b"host", b"a"), (b"te", b"trailers")])
    [(b'accept', b'*/*')]
    """
    named = set()
    for name, value in raw:
        if name.lower() == b"connection":
            named.update(v.strip().lower() for v in value.decode("latin-1").split(","))
    return [
        (name, value)
        for name, value in raw
        if (lower := name.decode("latin-1").lower()) not in HOP_BY_HOP
        and lower not in named
        and lower != "host"
    ]


class ReverseProxy:
    """Forwards every HTTP request to ``upstream`` (see the module docstring).

    Parameters
    ----------
    upstream
        ``http://host:port`` of the service (a path prefix is kept in front of each path).
    timeout_s
        Longest wait for the upstream to connect, take a request chunk or send a response
        chunk; past it the client gets 504 (or, once the response started, a cut connection).
    max_connections
        Connections to the upstream at once, kept alive between requests.
    """

    def __init__(self, upstream: str, *, timeout_s: float = 30.0, max_connections: int = 512):
        url = URL(upstream)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"upstream must be http://host:port, got {upstream!r}")
        self.upstream = str(url).rstrip("/")
        self.timeout_s = timeout_s
        self.max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    async def aclose(self) -> None:
        """Close the kept-alive upstream connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:  # made on the serving loop, on first use
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self.max_connections),
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=self.timeout_s, sock_read=self.timeout_s
                ),
                auto_decompress=False,  # bodies pass as they are, encoding and all
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            )
        return self._session

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return  # lifespan and websockets are not forwarded
        body_read = asyncio.Event()
        task = asyncio.current_task()
        assert task is not None
        forwarding = True

        def client_left(watch: asyncio.Future[None]) -> None:
            if forwarding and not watch.cancelled():
                task.cancel()  # stop waiting on the upstream now; the slot is freed on the way out

        watch = asyncio.ensure_future(_disconnected(receive, body_read))
        watch.add_done_callback(client_left)
        try:
            await self._forward(scope, receive, send, body_read)
        except ClientGone:
            pass  # gone mid-upload: nothing left to answer
        except asyncio.CancelledError:
            if not watch.done() or watch.cancelled():
                raise  # cancelled from outside
            task.uncancel()  # our own cancel: the client left, nothing left to answer
        finally:
            forwarding = False
            watch.cancel()

    async def _forward(
        self, scope: dict[str, Any], receive: Any, send: Any, body_read: asyncio.Event
    ) -> None:
        headers = forwarded_headers(scope["headers"])
        client = scope.get("client")
        if client:
            prior = [v for n, v in headers if n.lower() == b"x-forwarded-for"]
            chain = b", ".join([*prior, client[0].encode()])
            headers = [(n, v) for n, v in headers if n.lower() != b"x-forwarded-for"]
            headers.append((b"x-forwarded-for", chain))
        headers.append((b"x-forwarded-proto", scope.get("scheme", "http").encode()))
        for name, value in scope["headers"]:
            if name == b"host":
                headers.append((b"x-forwarded-host", value))
        slot = current_slot()
        if slot is not None:
            headers.append((SHARD_HEADER.encode(), str(slot.shard_id).encode()))
        target = scope.get("raw_path") or scope["path"].encode()
        query = scope.get("query_string") or b""
        url = target.decode("latin-1") + ("?" + query.decode("latin-1") if query else "")
        try:
            response = await self._http().request(
                scope["method"],
                URL(self.upstream + url, encoded=True),
                headers=[(n.decode("latin-1"), v.decode("latin-1")) for n, v in headers],
                data=_body(receive, scope, body_read),
                allow_redirects=False,
            )
        except (aiohttp.ConnectionTimeoutError, aiohttp.ClientConnectorError) as exc:
            await self._fail(send, 502, f"upstream {self.upstream} is unreachable: {exc!s}")
            return
        except (TimeoutError, aiohttp.ServerTimeoutError):
            await self._fail(
                send, 504, f"upstream {self.upstream} timed out after {self.timeout_s:g} s"
            )
            return
        except aiohttp.ClientError as exc:
            if _client_gone(exc):
                raise ClientGone() from None
            await self._fail(send, 502, f"upstream {self.upstream} failed: {exc!s}")
            return
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status,
                    "headers": forwarded_headers(list(response.raw_headers)),
                }
            )
            async for chunk in response.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        except (aiohttp.ClientError, TimeoutError) as exc:
            # The response has started: all that is left is to cut the client's connection.
            log.warning("upstream %s failed mid-response: %s", self.upstream, exc)
            raise
        finally:
            response.release()

    async def _fail(self, send: Any, status: int, why: str) -> None:
        body = f"{why}\n".encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _client_gone(exc: BaseException | None) -> bool:
    while exc is not None:
        if isinstance(exc, ClientGone):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _has_body(scope: dict[str, Any]) -> bool:
    for name, value in scope["headers"]:
        if name == b"transfer-encoding" or (name == b"content-length" and value != b"0"):
            return True
    return False


def _body(receive: Any, scope: dict[str, Any], read: asyncio.Event) -> AsyncIterator[bytes] | None:
    """The request body as it arrives (``None`` for a request without one)."""
    if not _has_body(scope):
        read.set()
        return None

    async def chunks() -> AsyncIterator[bytes]:
        try:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise ClientGone()
                if message.get("body"):
                    yield message["body"]
                if not message.get("more_body"):
                    return
        finally:
            read.set()

    return chunks()


async def _disconnected(receive: Any, body_read: asyncio.Event) -> None:
    """Returns when the client disconnects (only once its body has been read)."""
    await body_read.wait()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
