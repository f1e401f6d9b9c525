"""shardshape: gateway. What runs inside a service: ``install(app, service)`` shapes a Starlette
or FastAPI app in one call (:mod:`shardshape.gateway.asgi`), returning a :class:`Gateway`
handle; the pieces it wires stay importable from their modules for custom wiring.

``install`` and ``Gateway`` are imported on first use, so importing this package (or any one
module of it) loads nothing else.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shardshape.gateway.asgi import install
    from shardshape.gateway.wiring import Gateway

__all__ = ["Gateway", "install"]


def __getattr__(name: str) -> Any:
    if name == "install":
        from shardshape.gateway.asgi import install

        return install
    if name == "Gateway":
        from shardshape.gateway.wiring import Gateway

        return Gateway
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
