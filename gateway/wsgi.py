"""The gateway for WSGI apps (Flask, Django, any WSGI callable) under a threaded server.

``install_wsgi(app, service="shop")`` wraps a Flask app's ``wsgi_app`` in place, or wraps any
other WSGI callable and returns it. Per request, as the ASGI middleware does
(:mod:`shardshape.gateway.shaping`): the arriving event (user from
``SHARDSHAPE_GATEWAY_USER_HEADER``, request type from the Flask or Django route template, else
the normalised path), the predicted shard, a slot of its pool held by the request's thread
while the app answers and its response iterable is sent (paced by the pool's bandwidth), and
the completed event reported. A pool that rejects answers 503 with ``Retry-After``. The
status page and ``/metrics`` are served by the wrapper itself.

Each process is a gateway replica with its own id: the pools, followers and reporter are
built in the process that serves the first request (after a server's fork), and the
reporter sends what it holds when the process exits.

>>> def hello(environ, start_response):
...     start_response("200 OK", [("content-type", "text/plain")])
...     return [b"hi"]
>>> from shardshape.core.settings import Settings
>>> app = install_wsgi(hello, service="shop", settings=Settings(kafka_bootstrap=""))
>>> app.gateway is app, app.request_type({"REQUEST_METHOD": "GET", "PATH_INFO": "/users/42"})
(True, 'GET /users/{id}')
"""

from __future__ import annotations

import atexit
import os
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from http import HTTPStatus
from typing import Any

from shardshape.core.contracts import CACHE_HIT_ATTRIBUTE, RequestEvent, Status
from shardshape.core.settings import Settings, load_settings
from shardshape.gateway.endpoints import Endpoint
from shardshape.gateway.pools import ShardRejected, Slot
from shardshape.gateway.route_names import RouteNames
from shardshape.gateway.shaping import Arrival, Attributes, RequestShaper, outcome, rejection
from shardshape.gateway.wiring import Gateway

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]


def install_wsgi(
    app: Any,
    *,
    service: str,
    settings: Settings | None = None,
    expected_memory_mib: Callable[[RequestEvent, int], float] | None = None,
    request_type: Callable[[Environ], str] | None = None,
    unshaped_paths: Collection[str] = (),
) -> WsgiGateway:
    """Shape a WSGI app: a Flask app in place (its ``wsgi_app`` is wrapped), any other WSGI
    callable by the wrapper returned (``application = install_wsgi(application, ...)``).

    Returns the gateway: a WSGI callable whose ``.gateway`` is itself, the handle to its
    ``pools``, ``core`` (the :class:`~shardshape.gateway.wiring.Gateway` of this process:
    routing, plans, reporter, metrics) and ``status()``. Without a broker every request goes
    straight to the app, as with ``install``.

    Parameters
    ----------
    app
        A Flask app or any WSGI callable (Django's ``get_wsgi_application()``).
    service
        The service name in events and plans.
    settings
        Default: from the ``SHARDSHAPE_*`` environment.
    expected_memory_mib
        The memory a request is expected to need, for the pools' memory admission.
    request_type
        A function of the WSGI environ naming the request type (default: the Flask or Django
        route template, else the normalised path).
    unshaped_paths
        Paths passed straight to the app, neither pooled nor reported (health probes).
    """
    settings = settings or load_settings()
    flask_app = app if hasattr(app, "wsgi_app") and hasattr(app, "url_map") else None
    gateway = WsgiGateway(
        flask_app.wsgi_app if flask_app is not None else app,
        service=service,
        settings=settings,
        routes=RouteNames(max_routes=settings.gateway_max_routes, resolve=_resolver(app)),
        expected_memory_mib=expected_memory_mib,
        request_type=request_type,
        unshaped_paths=unshaped_paths,
    )
    if flask_app is not None:
        flask_app.wsgi_app = gateway
    return gateway


def _resolver(app: Any) -> Callable[[str, str], str | None] | None:
    """The route-template lookup of a Flask or Django app (``None`` for other apps)."""
    if hasattr(app, "url_map") and hasattr(app, "wsgi_app"):
        return _flask_resolver(app)
    if type(app).__module__.startswith("django."):
        return _django_resolve
    return None


def _flask_resolver(app: Any) -> Callable[[str, str], str | None]:
    from werkzeug.exceptions import HTTPException

    def resolve(method: str, path: str) -> str | None:
        adapter = app.url_map.bind("localhost", default_method=method)
        try:
            rule, _ = adapter.match(path, method, return_rule=True)
        except HTTPException:  # not found, method not allowed, a redirect to the slashed path
            return None
        return rule.rule

    return resolve


def _django_resolve(method: str, path: str) -> str | None:
    from django.urls import Resolver404, resolve

    try:
        route = resolve(path).route
    except Resolver404:
        return None
    return "/" + route.lstrip("^") if route else None


class WsgiGateway:
    """A WSGI app shaped by shard (see :func:`install_wsgi`, which builds it)."""

    def __init__(
        self,
        app: WSGIApp,
        *,
        service: str,
        settings: Settings,
        routes: RouteNames,
        expected_memory_mib: Callable[[RequestEvent, int], float] | None = None,
        request_type: Callable[[Environ], str] | None = None,
        unshaped_paths: Collection[str] = (),
    ) -> None:
        self.app = app
        self.service = service
        self.settings = settings
        self.unshaped_paths = frozenset(unshaped_paths)
        self._routes = routes
        self._request_type = request_type
        self._expected_memory = expected_memory_mib
        self._user_key = "HTTP_" + settings.gateway_user_header.upper().replace("-", "_")
        self._lock = threading.Lock()
        self._pid = 0
        self._core: Gateway | None = None
        self._shaper: RequestShaper | None = None
        self._endpoints: dict[str, Endpoint] = {}

    @property
    def gateway(self) -> WsgiGateway:
        """The handle (this gateway), also when ``install_wsgi`` returned the wrapper."""
        return self

    @property
    def core(self) -> Gateway:
        """This process's pools, followers, reporter and metrics (started on first use)."""
        return self._started()[0]

    @property
    def pools(self) -> Any:
        return self.core.pools

    def status(self) -> dict[str, Any]:
        """The status page's JSON body."""
        return self.core.status()

    def request_type(self, environ: Environ) -> str:
        """``METHOD /template`` of a request."""
        if self._request_type is not None:
            return self._request_type(environ)
        return self._routes(environ.get("REQUEST_METHOD", "GET"), environ.get("PATH_INFO", "/"))

    def stop(self) -> None:
        """Send what the reporter holds, stop following routing and plans (at exit, too)."""
        with self._lock:
            core, self._core = self._core, None
        if core is not None and self._pid == os.getpid():
            core.stop()

    def _started(self) -> tuple[Gateway, RequestShaper]:
        core, shaper = self._core, self._shaper
        if core is not None and shaper is not None and self._pid == os.getpid():
            return core, shaper
        with self._lock:  # first request of this process (a server may fork after install)
            if self._core is None or self._pid != os.getpid():
                core = Gateway(self.service, self.settings).start()
                self._shaper = RequestShaper(
                    self.service, core.pools, core.routing, core.report, self._expected_memory
                )
                self._endpoints = core.endpoints()
                self._core, self._pid = core, os.getpid()
                atexit.register(self.stop)
            assert self._core is not None and self._shaper is not None
            return self._core, self._shaper

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path in self.unshaped_paths:
            return self.app(environ, start_response)
        core, shaper = self._started()
        endpoint = self._endpoints.get(path)
        if endpoint is not None:  # the status page, health, readiness, metrics: never pooled
            return _answer(endpoint, environ, start_response)
        if not core.shaped:
            return self.app(environ, start_response)
        started = time.perf_counter()
        event = self._arriving(environ, shaper)
        shard, memory = shaper.shard_of(event)
        holding = core.pools.hold(
            shard, expected_memory_mib=memory, key=event.user_id or event.request_id
        )
        response = _Response(shaper, event, started, shard)
        try:
            slot = holding.__enter__()
        except ShardRejected as rejected:
            headers, body = rejection(rejected)
            start_response("503 Service Unavailable", headers)
            response.bytes = len(body)
            response.done("rejected", None)
            return [body]
        try:
            result = self.app(environ, response.start_response(start_response))
        except BaseException:
            holding.__exit__(None, None, None)
            response.done("error", slot)
            raise
        return _ShapedBody(result, holding, slot, response)

    def _arriving(self, environ: Environ, shaper: RequestShaper) -> Arrival:
        length = environ.get("CONTENT_LENGTH") or ""
        return shaper.arriving(
            self.request_type(environ),
            user=environ.get(self._user_key, ""),
            payload_bytes=float(length) if length.isdigit() else 0.0,
            request_id=environ.get("HTTP_X_REQUEST_ID", ""),
        )


class _Response:
    """What the app answered (status, bytes), reported once when the body is done."""

    __slots__ = ("bytes", "event", "shaper", "shard", "started", "status")

    def __init__(self, shaper: RequestShaper, event: Arrival, started: float, shard: int):
        self.shaper = shaper
        self.event = event
        self.started = started
        self.shard = shard
        self.status = 0
        self.bytes = 0

    def start_response(self, start_response: StartResponse) -> StartResponse:
        def counting(status: str, headers: list, exc_info: Any = None) -> Any:
            self.status = int(status.split(" ", 1)[0])
            return start_response(status, headers, exc_info)

        return counting

    def done(self, status: Status, slot: Slot | None) -> None:
        attributes: Attributes = self.event.attributes
        if slot is not None and slot.cache_hit is not None:
            attributes = {**attributes, CACHE_HIT_ATTRIBUTE: slot.cache_hit}
        self.shaper.completed(
            self.event,
            started=self.started,
            status=status,
            shard=self.shard,
            arm=slot.arm if slot is not None else None,
            response_bytes=self.bytes,
            attributes=attributes,
        )


class _ShapedBody:
    """The app's response iterable, paced by the pool's bandwidth; the slot is held until the
    server closes it (the end of the response, or the client gone)."""

    def __init__(self, result: Iterable[bytes], holding: Any, slot: Slot, response: _Response):
        self._result = result
        self._holding = holding
        self._slot = slot
        self._response = response
        self._failed = False

    def __iter__(self) -> Iterator[bytes]:
        pace = self._slot.pool.bucket.rate > 0
        try:
            for chunk in self._result:
                if pace and chunk:
                    self._slot.pace(len(chunk))
                self._response.bytes += len(chunk)
                yield chunk
        except BaseException:
            self._failed = True
            raise

    def close(self) -> None:
        try:
            close = getattr(self._result, "close", None)
            if close is not None:
                close()
        finally:
            self._holding.__exit__(None, None, None)
            response = self._response
            status = "error" if self._failed else outcome(response.status, response.status > 0)
            response.done(status, self._slot)


def _answer(endpoint: Endpoint, environ: Environ, start_response: StartResponse) -> list[bytes]:
    """``endpoint``'s answer to a WSGI request (it reads the request's headers only)."""
    headers = [
        (name[5:].lower().replace("_", "-").encode(), str(value).encode("latin-1"))
        for name, value in environ.items()
        if name.startswith("HTTP_")
    ]
    status, body, answer = endpoint({"type": "http", "path": environ.get("PATH_INFO", ""),
                                     "headers": headers})  # fmt: skip
    start_response(
        f"{status} {HTTPStatus(status).phrase}",
        [*answer.items(), ("content-length", str(len(body)))],
    )
    return [body]
