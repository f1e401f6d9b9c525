"""What every settings group shares: the environment prefix, the error, the group's base.

A group (:class:`SettingsGroup`) declares the fields and checks of one component.
:class:`~shardshape.core.settings.Settings` combines every group into one pydantic model that
reads the environment, so each field keeps its flat name and its ``SHARDSHAPE_NAME``.
"""

from __future__ import annotations

ENV_PREFIX = "SHARDSHAPE_"


class SettingsError(ValueError):
    """A setting has a bad value; the message names it and says what is accepted."""


class SettingsGroup:
    """The fields and checks of one component's settings, a base of ``Settings``.

    A group is a plain class, not a model: its fields become fields of ``Settings`` alone, so
    a group costs no model of its own at import. As a type it names what a component reads
    (``settings: IsolationSettings``); every ``Settings`` is an instance of each group.
    """
