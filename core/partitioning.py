"""The profile key of a request, and which partition of the requests topic it belongs to.

Every producer of request events (gateways, trace replay) groups events by this function, so
all events of one key reach the same partition, and so the same worker and table partition.

>>> partition_for("images|TXT_2_IMG|user-7", 4) == partition_for("images|TXT_2_IMG|user-7", 4)
True
>>> 0 <= partition_for("any key", 4) < 4
True
"""

from __future__ import annotations

import zlib


def profile_key(service: str, request_type: str, user_id: str) -> str:
    """The profile key: ``service|request_type|user_id`` (an empty user id is allowed).

    >>> profile_key("api", "GET /items", "u1")
    'api|GET /items|u1'
    """
    return f"{service}|{request_type}|{user_id}"


def partition_for(key: str, partitions: int) -> int:
    """A stable partition for ``key`` among ``partitions`` (CRC-32, the same in any language)."""
    return zlib.crc32(key.encode()) % partitions
