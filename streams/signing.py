"""HMAC signatures of control messages: routing entries, shard snapshots and plans.

With ``SHARDSHAPE_SIGNING_KEY`` set, workers put an HMAC-SHA256 of each message's key and value
in a Kafka header (:data:`SIGNATURE_HEADER`), and every reader of the routing and plans topics
(:class:`~shardshape.streams.follower.TopicFollower` with a signer) drops messages whose signature
is missing or wrong, so a party that can write to those topics but does not hold the key cannot
steer gateways. The value stays the plain contract JSON: readers without a key still read it.

>>> signer = Signer("k" * 32)
>>> headers = signer.headers(b"shop", b'{"v": 1}')
>>> signer.check(b"shop", b'{"v": 1}', headers) is None
True
>>> signer.check(b"shop", b'{"v": 2}', headers)
'forged: its signature does not match its key and value'
>>> signer.check(b"shop", b'{"v": 1}', None)
'unsigned: no shardshape-signature header'
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from pydantic import SecretStr

from shardshape.infra.settings import Settings

SIGNATURE_HEADER = "shardshape-signature"
_DOMAIN = b"shardshape-signature-v1\0"  # never the same bytes as another use of the key

Headers = Sequence[tuple[str, bytes | None]] | None


class Signer:
    """Signs and checks (key, value) pairs with one shared secret.

    Parameters
    ----------
    secret
        The shared key, as configured on every worker and gateway.
    """

    def __init__(self, secret: str | bytes | SecretStr) -> None:
        if isinstance(secret, SecretStr):
            secret = secret.get_secret_value()
        self._key = secret.encode() if isinstance(secret, str) else bytes(secret)

    def sign(self, key: bytes | None, value: bytes | None) -> bytes:
        """The signature (hex) of a message; a missing key or value (tombstone) signs as empty.

        The key's length goes first, so no split of the same bytes into key and value signs
        alike.
        """
        key, value = key or b"", value or b""
        mac = hmac.new(self._key, _DOMAIN, hashlib.sha256)
        mac.update(len(key).to_bytes(8, "big"))
        mac.update(key)
        mac.update(value)
        return mac.hexdigest().encode()

    def headers(self, key: bytes | None, value: bytes | None) -> list[tuple[str, bytes]]:
        """Kafka headers that carry the message's signature."""
        return [(SIGNATURE_HEADER, self.sign(key, value))]

    def check(self, key: bytes | None, value: bytes | None, headers: Headers) -> str | None:
        """None when the message is signed with this key, else why it is not (one line)."""
        given = [v for k, v in headers or () if k == SIGNATURE_HEADER]
        if not given or given[0] is None:
            return f"unsigned: no {SIGNATURE_HEADER} header"
        if len(given) > 1:
            return f"ambiguous: {len(given)} {SIGNATURE_HEADER} headers"
        if not hmac.compare_digest(given[0], self.sign(key, value)):
            return "forged: its signature does not match its key and value"
        return None


def signer_from(settings: Settings) -> Signer | None:
    """The signer of ``settings.signing_key``, or None when messages are not signed."""
    return Signer(settings.signing_key) if settings.signing_key is not None else None
