"""``castate ui``: the command's checks, kept free of the optional UI packages, and the
command itself, which imports ``castate.ui`` only when it runs."""

from __future__ import annotations

import argparse
import importlib
import ipaddress

from castate.cli.output import Output
from castate.errors import InvalidKeyError
from castate.state import StateManager

EXTRA = ("starlette", "uvicorn")


def loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (``localhost`` counts as 127.0.0.1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_address(host: str, allow_remote: bool) -> str:
    """The address to bind (``localhost`` becomes 127.0.0.1); refuses anything but loopback
    unless ``allow_remote``."""
    if not loopback(host) and not allow_remote:
        raise InvalidKeyError(
            f"castate ui serves loopback addresses only (127.0.0.1, ::1), not {host!r}: the page has no login, "
            "so anyone who can reach another address could read the store; pass --allow-remote to do it anyway"
        )
    return "127.0.0.1" if host == "localhost" else host


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
