"""A bearer token for web endpoints that change state (``SHARDSHAPE_ADMIN_TOKEN``).

Every view the worker serves today only reads (the dashboard, ``/metrics``, stats, shards). A
view that changes state must be wrapped in :func:`requires_admin_token`: it answers 401 unless
the request carries ``Authorization: Bearer <admin_token>``, and 403 for every call while no
token is configured, so such an endpoint is closed until an operator opens it.

>>> from pydantic import SecretStr
>>> token_problem("Bearer s3cret-token-of-some-length", SecretStr("s3cret-token-of-some-length"))
>>> token_problem("Bearer guess", SecretStr("s3cret-token-of-some-length"))
'wrong admin token'
>>> token_problem(None, None)
'this endpoint changes state and is disabled: set SHARDSHAPE_ADMIN_TOKEN to enable it'
"""

from __future__ import annotations

import functools
import hmac
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import SecretStr

Handler = Callable[..., Awaitable[Any]]

_SCHEME = "Bearer "


def token_problem(authorization: str | None, token: SecretStr | None) -> str | None:
    """None when ``authorization`` (the header's value) carries ``token``, else why not."""
    if token is None:
        return (
            "this endpoint changes state and is disabled: set SHARDSHAPE_ADMIN_TOKEN to enable it"
        )
    if not authorization or not authorization.startswith(_SCHEME):
        return "missing admin token: send 'Authorization: Bearer <SHARDSHAPE_ADMIN_TOKEN>'"
    given = authorization[len(_SCHEME) :].strip().encode()
    if not hmac.compare_digest(given, token.get_secret_value().encode()):
        return "wrong admin token"
    return None


def requires_admin_token(token: SecretStr | None) -> Callable[[Handler], Handler]:
    """Decorate a Faust page handler ``(web, request, ...)`` so that only callers with the
    admin token reach it; the others get a JSON error (401, or 403 while no token is set)."""

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def guarded(web: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
            problem = token_problem(request.headers.get("Authorization"), token)
            if problem is not None:
                return web.json({"error": problem}, status=403 if token is None else 401)
            return await handler(web, request, *args, **kwargs)

        return guarded

    return decorate
