"""``castate ui``: the command's checks, kept free of the optional UI packages (the address
rule lives in ``castate.ui.address``, which the server applies too), and the command itself,
which imports ``castate.ui.server`` only when it runs."""

from __future__ import annotations

import argparse
import importlib

from castate.cli.output import Output
from castate.sessions.manager import StateManager

EXTRA = ("starlette", "uvicorn")


def missing_extra() -> str | None:
    """The first package of the ``ui`` extra that cannot be imported, or None."""
    for name in EXTRA:
        try:
            importlib.import_module(name)
        except ImportError:
            return name
    return None


async def cmd_ui(sm: StateManager, args: argparse.Namespace, out: Output) -> int:
    from castate.ui.server import serve

    interrupted = await serve(
        sm,
        host=args.host,
        port=args.port,
        allow_writes=args.allow_writes,
        allow_remote=args.allow_remote,
        announce=out.line,
    )
    return 130 if interrupted else 0  # 130: interrupted, as every castate command reports Ctrl-C


__all__ = ["cmd_ui", "missing_extra"]
