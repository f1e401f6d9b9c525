"""``shardshape gateway``: the sidecar, a shaping reverse proxy in front of any service."""

from __future__ import annotations

from pathlib import Path

import click

from shardshape.infra.command_support import CommandError, require, settings_of


def _address(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (or ``:PORT``, all interfaces) as a host and a port.

    >>> _address("127.0.0.1:8080"), _address(":9000")
    (('127.0.0.1', 8080), ('0.0.0.0', 9000))
    """
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise click.BadParameter(f"{value!r} is not HOST:PORT (e.g. 127.0.0.1:8080)")
    return host.strip("[]") or "0.0.0.0", int(port)


@click.command("gateway")
@click.option("--service", required=True, help="The service's name in events and plans.")
@click.option(
    "--upstream",
    required=True,
    metavar="URL",
    help="The service the sidecar forwards to, http://HOST:PORT.",
)
@click.option(
    "--listen",
    default="127.0.0.1:8080",
    show_default=True,
    metavar="HOST:PORT",
    help="Where the sidecar takes the service's requests (:PORT for all interfaces).",
)
@click.option(
    "--routes",
    "routes_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help='TOML file of request types, routes = ["GET /items/{id}", ...] [default: paths '
    "with numbers, UUIDs and long hex segments as {id}].",
)
@click.pass_context
def gateway(
    ctx: click.Context, service: str, upstream: str, listen: str, routes_file: Path | None
) -> None:
    """Run the gateway as a sidecar: a reverse proxy in front of a service in any language.

    Each request is predicted to its shard, waits for a slot of that shard's pool (queue,
    timeout, 503 with Retry-After when full), is forwarded to --upstream with its bodies
    streamed and the header X-Shardshape-Shard added, and is reported to Kafka, exactly as
    the in-process gateway does; live plans resize the pools. The status page is at
    /shardshape/gateway/status (`shardshape doctor --gateway-url`), metrics at /metrics.
    An unreachable upstream answers 502; one slower than SHARDSHAPE_GATEWAY_UPSTREAM_TIMEOUT_MS,
    504. Without SHARDSHAPE_KAFKA_BOOTSTRAP it forwards every request unshaped. CPU and
    memory limits are not enforced through a proxy (see docs/gateway.md).
    """
    host, port = _address(listen)
    require("sidecar", "the sidecar (shardshape gateway)")
    import uvicorn

    from shardshape.gateway.route_names import RouteNames, RoutesFileError
    from shardshape.gateway.sidecar import sidecar_app

    settings = settings_of(ctx)
    try:
        routes = (
            RouteNames.from_file(routes_file, settings.gateway_max_routes) if routes_file else None
        )
        app = sidecar_app(settings, service, upstream, routes=routes)
    except (RoutesFileError, ValueError) as exc:
        raise CommandError(str(exc)) from None
    click.echo(f"shardshape gateway: {service} on http://{host}:{port} -> {upstream}", err=True)
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level="warning",
        lifespan="on",
        server_header=False,  # the upstream's own Server and Date headers pass through
        date_header=False,
    )
