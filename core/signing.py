"""Signatures of control messages: routing entries, shard snapshots and plans.

Workers sign; every reader of the routing and plans topics
(:class:`~shardshape.core.follower.TopicFollower` with a checker) drops messages whose
signature is missing or wrong, so a party that can write to those topics but cannot sign does
not steer gateways. The value stays the plain contract JSON: readers without a key still read it.
The signature travels in a Kafka header (:data:`SIGNATURE_HEADER`) over the message's key and
value. Two schemes (docs/security.md says who can forge what in each):

- **Ed25519** (``SHARDSHAPE_SIGNING_PRIVATE_KEY`` on workers, ``SHARDSHAPE_SIGNING_PUBLIC_KEY``
  on gateways): only holders of the private key can sign; gateways hold public keys, up to two
  at once so the key can be rotated without downtime.
- **HMAC-SHA256** (``SHARDSHAPE_SIGNING_KEY``, the fallback): one shared secret signs and
  checks, so every holder, gateways included, can sign.

>>> private = Ed25519PrivateKey.generate()
>>> signer, checker = Ed25519Signer(private), Ed25519Verifier([private.public_key()])
>>> headers = signer.headers(b"shop", b'{"v": 1}')
>>> checker.check(b"shop", b'{"v": 1}', headers) is None
True
>>> checker.check(b"shop", b'{"v": 2}', headers)
'forged: its signature matches none of the 1 public key(s)'
>>> checker.check(b"shop", b'{"v": 1}', None)
'unsigned: no shardshape-signature header'
>>> hmac_signer = HmacSigner("k" * 32)
>>> checker.check(b"shop", b'{"v": 1}', hmac_signer.headers(b"shop", b'{"v": 1}'))
'forged: not an Ed25519 signature (signed with a shared HMAC key?)'
>>> hmac_signer.check(b"shop", b'{"v": 1}', hmac_signer.headers(b"shop", b'{"v": 1}')) is None
True
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import SecretStr

if TYPE_CHECKING:
    from shardshape.core.settings import AuthSettings

SIGNATURE_HEADER = "shardshape-signature"
_HMAC_DOMAIN = b"shardshape-signature-v1\0"  # never the same bytes as another use of the key
_ED25519_DOMAIN = b"shardshape-ed25519-v1\0"
_ED25519_PREFIX = b"ed25519:"
MAX_PUBLIC_KEYS = 2  # the key in force and the next (or the previous), during a rotation

Headers = Sequence[tuple[str, bytes | None]] | None


class Checker(Protocol):
    """Checks a message's signature: None when it is good, else why not (one line)."""

    def check(self, key: bytes | None, value: bytes | None, headers: Headers) -> str | None: ...


class Signer(Checker, Protocol):
    """Signs messages (workers), and checks them."""

    def headers(self, key: bytes | None, value: bytes | None) -> list[tuple[str, bytes]]: ...


def _signed_bytes(domain: bytes, key: bytes | None, value: bytes | None) -> bytes:
    """What is signed: a missing key or value (tombstone) signs as empty; the key's length goes
    first, so no split of the same bytes into key and value signs alike."""
    key, value = key or b"", value or b""
    return domain + len(key).to_bytes(8, "big") + key + value


def _signature(headers: Headers) -> tuple[bytes | None, str | None]:
    """The one signature header's value, or why there is none."""
    given = [v for k, v in headers or () if k == SIGNATURE_HEADER]
    if not given or given[0] is None:
        return None, f"unsigned: no {SIGNATURE_HEADER} header"
    if len(given) > 1:
        return None, f"ambiguous: {len(given)} {SIGNATURE_HEADER} headers"
    return given[0], None


class HmacSigner:
    """Signs and checks (key, value) pairs with one shared secret (the fallback scheme).

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
        """The signature (hex) of a message."""
        digest = hmac.new(self._key, _signed_bytes(_HMAC_DOMAIN, key, value), hashlib.sha256)
        return digest.hexdigest().encode()

    def headers(self, key: bytes | None, value: bytes | None) -> list[tuple[str, bytes]]:
        """Kafka headers that carry the message's signature."""
        return [(SIGNATURE_HEADER, self.sign(key, value))]

    def check(self, key: bytes | None, value: bytes | None, headers: Headers) -> str | None:
        given, reason = _signature(headers)
        if given is None:
            return reason
        if not hmac.compare_digest(given, self.sign(key, value)):
            return "forged: its signature does not match its key and value"
        return None


class Ed25519Verifier:
    """Checks Ed25519 signatures against one or two public keys (two during a rotation)."""

    def __init__(self, public_keys: Sequence[Ed25519PublicKey]) -> None:
        if not 1 <= len(public_keys) <= MAX_PUBLIC_KEYS:
            raise ValueError(f"give 1 or {MAX_PUBLIC_KEYS} public keys, not {len(public_keys)}")
        self.public_keys = list(public_keys)

    def check(self, key: bytes | None, value: bytes | None, headers: Headers) -> str | None:
        given, reason = _signature(headers)
        if given is None:
            return reason
        if not given.startswith(_ED25519_PREFIX):
            return "forged: not an Ed25519 signature (signed with a shared HMAC key?)"
        try:
            signature = base64.b64decode(given[len(_ED25519_PREFIX) :], validate=True)
        except (binascii.Error, ValueError):
            return "forged: a malformed Ed25519 signature"
        signed = _signed_bytes(_ED25519_DOMAIN, key, value)
        for public_key in self.public_keys:
            try:
                public_key.verify(signature, signed)
                return None
            except InvalidSignature:
                continue
        return f"forged: its signature matches none of the {len(self.public_keys)} public key(s)"


class Ed25519Signer(Ed25519Verifier):
    """Signs with an Ed25519 private key (workers); checks against its own public key and
    ``accepted`` ones (the other key of a rotation)."""

    def __init__(
        self, private_key: Ed25519PrivateKey, accepted: Sequence[Ed25519PublicKey] = ()
    ) -> None:
        own = private_key.public_key()
        others = [k for k in accepted if k != own]
        super().__init__([own, *others][:MAX_PUBLIC_KEYS])
        self._private_key = private_key

    def sign(self, key: bytes | None, value: bytes | None) -> bytes:
        signature = self._private_key.sign(_signed_bytes(_ED25519_DOMAIN, key, value))
        return _ED25519_PREFIX + base64.b64encode(signature)

    def headers(self, key: bytes | None, value: bytes | None) -> list[tuple[str, bytes]]:
        """Kafka headers that carry the message's signature."""
        return [(SIGNATURE_HEADER, self.sign(key, value))]


def load_private_key(text: str) -> Ed25519PrivateKey:
    """An Ed25519 private key from PEM (``openssl genpkey -algorithm ed25519``) or the base64 of
    its 32-byte seed (``shardshape signing-keys``); ValueError says what was wrong."""
    text = text.strip()
    try:
        if "BEGIN" in text:
            key = serialization.load_pem_private_key(text.encode(), password=None)
        else:
            key = Ed25519PrivateKey.from_private_bytes(base64.b64decode(text, validate=True))
    except (ValueError, TypeError, binascii.Error, UnsupportedAlgorithm) as exc:
        raise ValueError(f"not an Ed25519 private key (PEM or base64 of 32 bytes): {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"a {type(key).__name__}, not an Ed25519 private key")
    return key


def load_public_keys(text: str) -> list[Ed25519PublicKey]:
    """Ed25519 public keys: PEM blocks (``openssl pkey -pubout``), or base64 of 32 bytes each,
    separated by commas or white space.

    >>> raw = base64.b64encode(bytes(32)).decode()
    >>> len(load_public_keys(f"{raw}, {raw}"))
    2
    """
    text = text.strip()
    try:
        if "BEGIN" in text:
            blocks = re.findall(r"-----BEGIN [^-]+-----.*?-----END [^-]+-----", text, re.S)
            keys = [serialization.load_pem_public_key(b.encode()) for b in blocks]
        else:
            keys = [
                Ed25519PublicKey.from_public_bytes(base64.b64decode(part, validate=True))
                for part in re.split(r"[,\s]+", text)
                if part
            ]
    except (ValueError, TypeError, binascii.Error, UnsupportedAlgorithm) as exc:
        raise ValueError(f"not Ed25519 public keys (PEM or base64 of 32 bytes): {exc}") from None
    wrong = [type(k).__name__ for k in keys if not isinstance(k, Ed25519PublicKey)]
    if wrong:
        raise ValueError(f"{', '.join(wrong)}: not Ed25519 public keys")
    return keys  # type: ignore[return-value]


def public_key_text(key: Ed25519PublicKey) -> str:
    """The base64 of a public key's 32 bytes, as SHARDSHAPE_SIGNING_PUBLIC_KEY takes it."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def private_key_text(key: Ed25519PrivateKey) -> str:
    """The base64 of a private key's 32-byte seed, as SHARDSHAPE_SIGNING_PRIVATE_KEY takes it."""
    raw = key.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )
    return base64.b64encode(raw).decode()


def signer_from(settings: AuthSettings) -> Signer | None:
    """What a worker signs with: the Ed25519 private key, else the HMAC key, else None."""
    if settings.signing_private_key is not None:
        private = load_private_key(settings.signing_private_key.get_secret_value())
        return Ed25519Signer(private, load_public_keys(settings.signing_public_key or ""))
    if settings.signing_key is not None:
        return HmacSigner(settings.signing_key)
    return None


def checker_from(settings: AuthSettings) -> Checker | None:
    """What a reader (gateway or worker) checks with: the Ed25519 public keys (and the private
    key's own, on a worker), else the HMAC key, else None (messages are not checked)."""
    if settings.signing_private_key is not None:
        return signer_from(settings)
    if settings.signing_public_key:
        return Ed25519Verifier(load_public_keys(settings.signing_public_key))
    if settings.signing_key is not None:
        return HmacSigner(settings.signing_key)
    return None
