"""What every ``shardshape`` command shares: the console, the error that exits 2, settings
loaded on first use, the extra check and time parsing."""

from __future__ import annotations

import click
from rich.console import Console

from shardshape.core.logs import configure_logging
from shardshape.core.settings import ENV_PREFIX, Settings, SettingsError, load_settings
from shardshape.infra.extras import MissingExtra, require_extra

console = Console(stderr=True)


class CommandError(click.ClickException):
    """A failure the user can fix; printed without a traceback."""

    exit_code = 2


def settings_of(ctx: click.Context) -> Settings:
    """Settings for this invocation, loaded on first use (so `--help` works with bad ones)."""
    root = ctx.find_root()
    if root.obj is None:
        try:
            root.obj = load_settings()
        except SettingsError as exc:
            raise CommandError(str(exc)) from None
        configure_logging(root.obj.log_level, root.obj.log_format)
    return root.obj


def require(extra: str, what: str) -> None:
    """Stop (exit 2) naming the extra to install when ``what`` needs one that is missing; run
    first, before the command imports what the extra provides."""
    try:
        require_extra(extra, what)
    except MissingExtra as exc:
        raise CommandError(str(exc)) from None


def bootstrapped(settings: Settings, command: str) -> Settings:
    if not settings.kafka_bootstrap:
        raise CommandError(
            f"`shardshape {command}` needs a running broker: set {ENV_PREFIX}KAFKA_BOOTSTRAP="
            "host:port (for the embedded one, `shardshape broker` prints it), or use "
            "`shardshape run`, which starts an embedded broker itself"
        )
    return settings


def parse_time(text: str, tz, option: str = "--evaluate-after") -> float:
    """``text`` ('YYYY-MM-DD HH:MM:SS' in ``tz``, or Unix seconds) as Unix seconds; a
    :class:`CommandError` naming ``option`` when it is neither."""
    from datetime import datetime

    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise CommandError(
            f"{option} {text!r}: expected 'YYYY-MM-DD HH:MM:SS' or Unix seconds"
        ) from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=tz)).timestamp()
