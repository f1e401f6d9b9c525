"""How operators write settings: secrets in files, and unknown variables named with the fix.

With :mod:`shardshape.core.settings`, the one place shardshape reads the process environment:
settings come from it there, and a child process that inherits it gets it from
:func:`process_environment`.

Every secret setting (and the signing public keys) can be given as ``SHARDSHAPE_NAME`` or as
``SHARDSHAPE_NAME_FILE``, the path of a file holding it (a mounted container secret; one
trailing newline is stripped). A ``SHARDSHAPE_*`` variable that names no setting is warned about
once per process, with the closest known name, since a typo otherwise silently keeps a default.

>>> closest("SHARDSHAPE_KAFKA_BOOTSTRAPS", ["SHARDSHAPE_KAFKA_BOOTSTRAP", "SHARDSHAPE_WEB_PORT"])
'SHARDSHAPE_KAFKA_BOOTSTRAP'
>>> closest("SHARDSHAPE_XYZZY", ["SHARDSHAPE_KAFKA_BOOTSTRAP"]) is None
True
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

log = logging.getLogger("shardshape.settings")

FILE_SUFFIX = "_FILE"
# Read by the test suite, not by shardshape itself.
OTHER_KNOWN = ("TEST_BOOTSTRAP",)
_warned: set[str] = set()


class FileValueError(ValueError):
    """A ``*_FILE`` variable names a file that cannot be read, or clashes with its setting."""


class FileSettingsSource(PydanticBaseSettingsSource):
    """Values of ``prefix + NAME + _FILE`` variables, read from the files they name.

    Parameters
    ----------
    settings_cls
        The settings class.
    prefix
        The environment prefix (``SHARDSHAPE_``).
    names
        The fields that may come from a file.
    environ
        The environment (default: ``os.environ``).
    """

    def __init__(
        self,
        settings_cls: type[BaseSettings],
        prefix: str,
        names: Iterable[str],
        environ: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(settings_cls)
        self.prefix = prefix
        self.names = tuple(names)
        self.environ = os.environ if environ is None else environ

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # __call__ reads them all

    def __call__(self) -> dict[str, Any]:
        values = {}
        for name in self.names:
            variable = f"{self.prefix}{name.upper()}"
            path = self.environ.get(variable + FILE_SUFFIX)
            if not path:
                continue
            if self.environ.get(variable):
                raise FileValueError(
                    f"both {variable} and {variable}{FILE_SUFFIX} are set: keep one"
                )
            values[name] = read_secret_file(variable + FILE_SUFFIX, Path(path))
        return values


def process_environment() -> dict[str, str]:
    """A copy of this process's environment, for a child process to start with.

    >>> process_environment() == dict(os.environ)
    True
    """
    return dict(os.environ)


def read_secret_file(variable: str, path: Path) -> str:
    """The text of ``path`` without one trailing newline; a clear error naming ``variable``."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise FileValueError(
            f"{variable}={path} cannot be read ({exc.strerror}): point it at the file holding "
            "the value (e.g. a mounted secret), or unset it"
        ) from None
    return text.removesuffix("\n").removesuffix("\r")


def closest(name: str, known: Iterable[str]) -> str | None:
    """The known name most like ``name``, or None when none is close."""
    matches = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return matches[0] if matches else None


def warn_unknown(
    prefix: str, known: Iterable[str], environ: Mapping[str, str] | None = None
) -> list[str]:
    """Log a warning, once per process, for each ``prefix*`` variable not in ``known``; returns
    the variables warned about now."""
    known = set(known) | {prefix + other for other in OTHER_KNOWN}
    environ = os.environ if environ is None else environ
    warned = []
    for variable in sorted(environ):
        if not variable.startswith(prefix) or variable in known or variable in _warned:
            continue
        _warned.add(variable)
        warned.append(variable)
        guess = closest(variable, known)
        log.warning(
            "%s is not a shardshape setting and is ignored%s; `shardshape settings` lists them",
            variable,
            f" (did you mean {guess}?)" if guess else "",
        )
    return warned
