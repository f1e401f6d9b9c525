"""Loopback ports: a free one, and checks with errors that say which setting to change."""

from __future__ import annotations

import socket

from shardshape.core.settings import ENV_PREFIX


def free_port() -> int:
    """A loopback port free at the time of asking (for a child process or a test server to take).

    >>> free_port() > 0
    True
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PortInUseError(RuntimeError):
    """A port shardshape should listen on is taken; the message names the setting."""


def ensure_port_free(port: int, setting: str) -> int:
    """Return ``port`` if it can be bound on 127.0.0.1 (a free one when 0), else fail with the fix.

    >>> ensure_port_free(0, "BROKER_PORT") > 0
    True
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as exc:
            raise PortInUseError(
                f"port {port} on 127.0.0.1 is taken ({exc.strerror}): stop what listens there, "
                f"or set {ENV_PREFIX}{setting} to another port"
                + (" (0 picks a free one)" if setting == "BROKER_PORT" else "")
            ) from None
        return sock.getsockname()[1]
