"""Setting a deployment up: ``settings`` (every setting and its value), ``signing-keys``
and ``doctor`` (what the host allows for isolation, a gateway's state)."""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.table import Table

from shardshape.core.settings import ENV_PREFIX, Settings
from shardshape.infra.command_support import CommandError, settings_of


@click.command("settings")
@click.pass_context
def show_settings(ctx: click.Context) -> None:
    """List every setting with its environment variable and current value."""
    current = settings_of(ctx)
    table = Table("environment variable", "value", "description")
    for name, field in Settings.model_fields.items():
        value = getattr(current, name)
        shown = "********" if "password" in name and value else str(value)
        table.add_row(f"{ENV_PREFIX}{name.upper()}", shown, field.description or "")
    Console().print(table)


@click.command("signing-keys")
def signing_keys() -> None:
    """Make a new Ed25519 key pair for signing routing entries, snapshots and plans.

    Prints SHARDSHAPE_SIGNING_PRIVATE_KEY (workers only; keep it secret, e.g. in a file named by
    SHARDSHAPE_SIGNING_PRIVATE_KEY_FILE) and SHARDSHAPE_SIGNING_PUBLIC_KEY (gateways; to rotate,
    give them the old and the new public key, comma-separated, then move the workers to the new
    private key). See docs/security.md.
    """
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from shardshape.core.signing import private_key_text, public_key_text

    key = Ed25519PrivateKey.generate()
    click.echo(f"{ENV_PREFIX}SIGNING_PRIVATE_KEY={private_key_text(key)}")
    click.echo(f"{ENV_PREFIX}SIGNING_PUBLIC_KEY={public_key_text(key.public_key())}")


@click.command()
@click.option(
    "--gateway-url",
    metavar="URL",
    help="A running gateway (http://host:port, or its status endpoint's full URL): also show "
    "its routing table, snapshot and plan versions and pool states.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@click.pass_context
def doctor(ctx: click.Context, gateway_url: str | None, as_json: bool) -> None:
    """Show what this host allows for isolating shard workers: cgroup v2, cgroup v1, rlimits
    or nothing, each controller, whether it is writable, why not, and the fallback.

    The check creates and removes one probe group under SHARDSHAPE_ISOLATION_CGROUP_PARENT and
    changes nothing else. Exits with 2 when SHARDSHAPE_ISOLATION_MODE names a mode the host
    does not allow. See docs/isolation.md.
    """
    from shardshape.gateway.isolation.detect import detect_capabilities
    from shardshape.gateway.isolation.report import capabilities_report
    from shardshape.gateway.status import StatusUnavailable, fetch_status, status_report

    caps = detect_capabilities(settings_of(ctx))
    try:
        status = fetch_status(gateway_url) if gateway_url else None
    except StatusUnavailable as exc:
        raise CommandError(str(exc)) from None
    if as_json:
        body = {
            "isolation": caps.model_dump(mode="json"),
            "gateway": status.model_dump(mode="json") if status else None,
        }
        click.echo(json.dumps(body, indent=2))
    else:
        out = Console()
        for part in [*capabilities_report(caps), *(status_report(status) if status else [])]:
            out.print(part)
    if caps.error:
        raise CommandError(caps.error)
