"""The ``shardshape`` commands, one module per command group; :mod:`shardshape.infra.cli`
gathers them and :mod:`shardshape.infra.command_support` holds what they share.

Each module imports at its top only what ``shardshape --help`` can afford (click, rich, the
settings); what a command needs from an extra it imports when it runs, after
:func:`~shardshape.infra.command_support.require` has checked the extra is installed.
"""
