"""Run the explorer: check the address, bind it, serve the app with uvicorn until Ctrl-C."""

from __future__ import annotations

import socket
from collections.abc import Callable

import uvicorn

from castate.errors import UsageError
from castate.sessions.manager import StateManager
from castate.ui.address import check_address, loopback
from castate.ui.app import create_app
from castate.ui.explorer import Explorer
from castate.ui.sizecache import SizeCache


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)  # connections wait in the backlog from now on, even before uvicorn accepts them
    except OSError as exc:
        sock.close()
        raise UsageError(
            f"cannot serve on {host}:{port}: {exc.strerror or exc}; pick another port with "
            "`castate ui --port N` (0 picks a free one)"
        ) from None
    return sock


def host_names(host: str, port: int) -> frozenset[str]:
    """The Host header values a browser sends for this address."""
    names = {host} | ({"localhost", "127.0.0.1"} if host == "127.0.0.1" else set())
    shown = {f"[{n}]" if ":" in n else n for n in names}
    return frozenset({*shown, *(f"{n}:{port}" for n in shown)})


async def serve(
    sm: StateManager,
    *,
    host: str,
    port: int,
    allow_writes: bool,
    allow_remote: bool,
    announce: Callable[[str], None],
) -> bool:
    """Serve the explorer over ``sm`` (an open store) until interrupted; True when a signal
    (Ctrl-C, SIGTERM) stopped it."""
    host = check_address(host, allow_remote)
    sock = bind(host, port)
    port = sock.getsockname()[1]
    hosts = None if not loopback(host) else host_names(host, port)
    explorer = Explorer(sm, SizeCache.for_backend(sm.repository.backend))
    app = create_app(explorer, allow_writes=allow_writes, hosts=hosts)
    explorer.start_warming()  # read the histories while the browser opens the page
    config = uvicorn.Config(
        app,
        http="h11",
        ws="none",
        lifespan="off",
        log_level="warning",
        access_log=False,
        proxy_headers=False,
        server_header=False,
    )
    server = uvicorn.Server(config)
    shown = f"[{host}]" if ":" in host else host
    mode = "read-write: restore, fork and checkpoint allowed" if allow_writes else "read-only"
    announce(f"castate ui: {sm.repository.backend.location} at http://{shown}:{port}/ ({mode}); Ctrl-C stops it")
    if hosts is None:
        announce("castate ui: warning: not a loopback address; anyone who can reach it can use this page")
    try:
        await server.serve(sockets=[sock])
    finally:
        await explorer.close()
    # uvicorn re-raises the signal once it has shut down, but under asyncio.run that only
    # cancels the main task, which may already be done: say it here.
    return server.should_exit
