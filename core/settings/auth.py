"""Who is trusted: the keys that sign and check routing entries, snapshots and plans, and the
token of web endpoints that change state (docs/security.md)."""

from __future__ import annotations

from typing import Any, Self

from pydantic import Field, SecretStr, model_validator

from shardshape.core.settings.group import ENV_PREFIX, SettingsGroup


class AuthSettings(SettingsGroup):
    """``signing_private_key``, ``signing_public_key`` and ``signing_key``."""

    signing_private_key: SecretStr | None = Field(
        None,
        description="Ed25519 private key (PEM, or base64 of its 32-byte seed; `shardshape "
        "signing-keys` makes a pair) workers sign routing entries, snapshots and plans with. "
        "Only workers hold it (docs/security.md).",
    )
    signing_public_key: str | None = Field(
        None,
        description="Ed25519 public key(s) whose signatures gateways (and workers) accept: PEM, "
        "or base64 of 32 bytes; two (comma-separated, or two PEM blocks) while rotating.",
        json_schema_extra={"file": True},
    )
    signing_key: SecretStr | None = Field(
        None,
        description="HMAC-SHA256 key (at least 32 characters), the fallback to Ed25519: workers "
        "sign with it and gateways check with it, so every holder can sign (docs/security.md).",
    )

    @model_validator(mode="after")
    def _check_auth(self) -> Self:
        if self.signing_key is not None and len(self.signing_key.get_secret_value()) < 32:
            raise ValueError(
                f"{ENV_PREFIX}SIGNING_KEY has {len(self.signing_key.get_secret_value())} "
                "characters: use at least 32 random ones (e.g. `openssl rand -hex 32`), the same "
                "on every worker and gateway"
            )
        _check_signing_keys(self)
        return self


def _check_signing_keys(settings: AuthSettings) -> None:
    """The Ed25519 keys parse, at most two are accepted at once, and HMAC is not set too."""
    from shardshape.core.signing import MAX_PUBLIC_KEYS, load_private_key, load_public_keys

    private, public = settings.signing_private_key, settings.signing_public_key
    if private is None and not public:
        return
    if settings.signing_key is not None:
        raise ValueError(
            f"both {ENV_PREFIX}SIGNING_KEY (HMAC) and Ed25519 keys are set: keep the Ed25519 "
            f"keys ({ENV_PREFIX}SIGNING_PRIVATE_KEY on workers, {ENV_PREFIX}SIGNING_PUBLIC_KEY "
            "on gateways) and unset the HMAC key"
        )
    accepted = set()
    try:
        if private is not None:
            accepted.add(_raw(load_private_key(private.get_secret_value()).public_key()))
    except ValueError as exc:
        raise ValueError(f"{ENV_PREFIX}SIGNING_PRIVATE_KEY: {exc}") from None
    try:
        accepted |= {_raw(key) for key in load_public_keys(public or "")}
    except ValueError as exc:
        raise ValueError(f"{ENV_PREFIX}SIGNING_PUBLIC_KEY: {exc}") from None
    if len(accepted) > MAX_PUBLIC_KEYS:
        raise ValueError(
            f"{len(accepted)} signing keys accepted at once (the private key's and "
            f"{ENV_PREFIX}SIGNING_PUBLIC_KEY's): at most {MAX_PUBLIC_KEYS}, the key in force and "
            "the next during a rotation"
        )


def _raw(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
