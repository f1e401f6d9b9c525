"""shardshape: gateway. What runs inside a service: ``install(app, service)`` shapes a Starlette
or FastAPI app in one call (:mod:`shardshape.gateway.asgi`), returning a :class:`Gateway`
handle; ``install_wsgi(app, service)`` a Flask, Django or any WSGI app
(:mod:`shardshape.gateway.wsgi`); the pieces they wire stay importable from their modules for
custom wiring (the sidecar, ``shardshape gateway``, is one: :mod:`shardshape.gateway.sidecar`).

``install``, ``install_wsgi`` and ``Gateway`` are imported on first use, so importing this
package (or any one module of it) loads nothing else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shardshape.gateway.asgi import install
    from shardshape.gateway.wiring import Gateway
    from shardshape.gateway.wsgi import install_wsgi

__all__ = ["Gateway", "install", "install_wsgi"]


def __getattr__(name: str) -> Any:
    if name == "install":
        from shardshape.gateway.asgi import install

        return install
    if name == "install_wsgi":
        from shardshape.gateway.wsgi import install_wsgi

        return install_wsgi
    if name == "Gateway":
        from shardshape.gateway.wiring import Gateway

        return Gateway
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
