"""Which address ``castate ui`` may bind: loopback only, unless the user allows otherwise.

Free of the optional UI packages (Starlette, uvicorn): the CLI checks the address with it
before it knows whether they are installed, and the server checks it again before binding.
"""

from __future__ import annotations

import ipaddress

from castate.errors import UsageError


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
        raise UsageError(
            f"castate ui serves loopback addresses only (127.0.0.1, ::1), not {host!r}: the page has no login, "
            "so anyone who can reach another address could read the store; pass --allow-remote to do it anyway"
        )
    return "127.0.0.1" if host == "localhost" else host


__all__ = ["check_address", "loopback"]
