"""The web app of ``castate ui``: the page, its assets, and JSON endpoints over an ``Explorer``.

A local tool still faces the browser's other tabs, so:

- requests whose ``Host`` is not the address served are refused (no DNS rebinding);
- write endpoints exist only with ``allow_writes``, and take JSON with the page's token in
  ``X-Castate-Token`` (another site can neither read the token nor send that header);
- assets are a fixed set read from the package once; no part of a URL becomes a path;
- every response forbids framing and scripts from elsewhere (Content-Security-Policy).
"""

from __future__ import annotations

import hmac
import importlib.resources
import re
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from castate.codec.types import unregistered_as_dicts
from castate.display import to_json
from castate.errors import (
    BackendUnavailableError,
    CastateError,
    ConflictError,
    InvalidKeyError,
    NotFoundError,
    StoreIOError,
    UsageError,
)
from castate.ui.explorer import MAX_CHANGES, Explorer

ASSETS = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
MAX_BODY = 64 << 10
MAX_INT = 10**12  # an offset beyond any list's length, small enough for every int the library takes
_DIGITS = re.compile(r"[0-9]{1,13}", re.ASCII)

Handler = Callable[[Request], Awaitable[Any]]


def _asset(name: str) -> bytes:
    return (importlib.resources.files("castate.ui") / "static" / name).read_bytes()


def json_response(value: Any, status: int = 200) -> Response:
    return Response(to_json(value, indent=False), status_code=status, media_type="application/json", headers=HEADERS)


def _error_status(exc: CastateError) -> int:
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, InvalidKeyError | UsageError):
        return 400
    if isinstance(exc, ConflictError):
        return 409
    if isinstance(exc, BackendUnavailableError | StoreIOError):
        return 503  # the store cannot be reached or read now: worth a retry
    return 500  # e.g. corruption, which names the object or file


def _endpoint(fn: Handler) -> Callable[[Request], Awaitable[Response]]:
    async def run(request: Request) -> Response:
        try:
            with unregistered_as_dicts():  # the page has no user types registered: tagged dicts
                result = await fn(request)
                return result if isinstance(result, Response) else json_response(result)
        except CastateError as exc:
            return json_response({"error": str(exc), "type": type(exc).__name__}, _error_status(exc))
        except OSError as exc:  # e.g. the store was moved or deleted while being served
            return json_response({"error": f"the store cannot be read: {exc}", "type": "StoreError"}, 503)

    return run


def _text(request: Request, name: str, default: str | None = None) -> str:
    value = request.query_params.get(name, default)
    if value is None:
        raise UsageError(f"missing query parameter {name!r}")
    return value


def _int(request: Request, name: str, default: int, *, low: int = 0, high: int = MAX_INT) -> int:
    """A whole-number query parameter in [low, high]: ASCII digits only (``str.isdigit`` would
    take "²" or other scripts' digits), bounded; anything else is a 400."""
    text = request.query_params.get(name)
    if text is None:
        return default
    if not _DIGITS.fullmatch(text):
        raise UsageError(f"{name} must be a whole number from {low} to {high}, not {text[:40]!r}")
    value = int(text)
    if not low <= value <= high:
        raise UsageError(f"{name} must be from {low} to {high}, not {value}")
    return value


class HostCheck:
    """Refuses requests whose Host header is not one of ``hosts`` (None: any)."""

    def __init__(self, app: ASGIApp, hosts: frozenset[str] | None) -> None:
        self.app = app
        self.hosts = hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.hosts is not None:
            host = dict(scope["headers"]).get(b"host", b"").decode("latin-1").lower()
            if host not in self.hosts:
                response = Response("unknown host", status_code=421, media_type="text/plain")
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(
    explorer: Explorer,
    *,
    allow_writes: bool = False,
    hosts: frozenset[str] | None = None,
    token: str | None = None,
) -> ASGIApp:
    """The ASGI app. ``hosts``: the Host header values accepted (None accepts any)."""
    token = token or secrets.token_urlsafe(24)
    config = {"writes": allow_writes, "token": token if allow_writes else None, "store": explorer.location}
    page = (
        _asset("index.html")
        .decode("utf-8")
        .replace("__CONFIG__", to_json(config, indent=False).replace("<", "\\u003c"))
        .encode("utf-8")
    )
    assets = {name: _asset(name) for name in ASSETS}

    async def index(request: Request) -> Response:
        return Response(page, media_type="text/html; charset=utf-8", headers=HEADERS)

    def static(name: str) -> Callable[[Request], Awaitable[Response]]:
        body, kind = assets[name], ASSETS[name]

        async def serve(request: Request) -> Response:
            return Response(body, media_type=kind, headers=HEADERS)

        return serve

    async def sessions(request: Request) -> Any:
        return await explorer.sessions()

    async def timeline(request: Request) -> Any:
        body = await explorer.timeline_json(_text(request, "session"))  # encoded once per state of the refs
        return Response(body, media_type="application/json", headers=HEADERS)

    async def revisions(request: Request) -> Any:
        return await explorer.revisions()

    async def diff(request: Request) -> Any:
        return await explorer.diff(
            _text(request, "a"),
            _text(request, "b"),
            _text(request, "path", ""),
            _int(request, "offset", 0),
            _int(request, "limit", MAX_CHANGES, low=1, high=MAX_CHANGES),
        )

    async def tree(request: Request) -> Any:
        return await explorer.tree(
            _text(request, "rev"),
            _text(request, "path", ""),
            _int(request, "offset", 0),
            _int(request, "limit", 200, low=1, high=1000),
        )

    async def value(request: Request) -> Any:
        return await explorer.value(_text(request, "rev"), _text(request, "path", ""))

    async def download(request: Request) -> Response:
        # The value itself as a file (bytes as they are, a str as UTF-8 text): never shown
        # inline, whatever it holds (Content-Disposition: attachment, nosniff).
        try:
            v = await explorer.value(_text(request, "rev"), _text(request, "path", ""))
        except CastateError as exc:
            return json_response({"error": str(exc), "type": type(exc).__name__}, _error_status(exc))
        name = "value.bin" if v["kind"] == "bytes" else "value.txt"
        body = v["value"] if v["kind"] == "bytes" else v["value"].encode("utf-8")
        kind = "application/octet-stream" if v["kind"] == "bytes" else "text/plain; charset=utf-8"
        headers = {**HEADERS, "Content-Disposition": f'attachment; filename="{name}"'}
        return Response(body, media_type=kind, headers=headers)

    async def health(request: Request) -> Any:
        return await explorer.health()

    async def reflog(request: Request) -> Any:
        saves = _text(request, "saves", "1")
        if saves not in ("0", "1"):
            raise UsageError(f"saves must be 0 or 1, not {saves[:40]!r}")
        return await explorer.reflog(
            _text(request, "session"),
            _int(request, "offset", 0),
            _int(request, "limit", 100, low=1, high=1000),
            saves == "1",
        )

    async def no_icon(request: Request) -> Response:
        return Response(status_code=204, headers=HEADERS)

    routes = [
        Route("/", index),
        Route("/favicon.ico", no_icon),
        *(Route(f"/static/{name}", static(name)) for name in ASSETS),
        Route("/api/sessions", _endpoint(sessions)),
        Route("/api/timeline", _endpoint(timeline)),
        Route("/api/revisions", _endpoint(revisions)),
        Route("/api/diff", _endpoint(diff)),
        Route("/api/tree", _endpoint(tree)),
        Route("/api/value", _endpoint(value)),
        Route("/api/download", download),
        Route("/api/health", _endpoint(health)),
        Route("/api/reflog", _endpoint(reflog)),
    ]

    if allow_writes:

        async def body(request: Request) -> dict[str, Any]:
            sent = request.headers.get("x-castate-token", "")
            if not hmac.compare_digest(sent.encode(), token.encode()):
                raise _Forbidden("missing or wrong X-Castate-Token: write actions come from the page only")
            if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
                raise _Forbidden("write actions take application/json")
            raw = await request.body()
            if len(raw) > MAX_BODY:
                raise UsageError("request body too large")
            try:
                data = orjson.loads(raw)
            except ValueError:
                raise UsageError("the request body is not JSON") from None
            if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
                raise UsageError("the request body must be a JSON object of strings")
            return data

        def field(data: dict[str, str], name: str) -> str:
            if not data.get(name):
                raise UsageError(f"missing {name!r}")
            return data[name]

        async def restore(request: Request) -> Any:
            data = await body(request)
            return await explorer.restore(field(data, "source"), field(data, "session"), field(data, "expected"))

        async def fork(request: Request) -> Any:
            data = await body(request)
            return await explorer.fork(field(data, "source"), field(data, "new_session"))

        async def checkpoint(request: Request) -> Any:
            data = await body(request)
            return await explorer.checkpoint(field(data, "session"), field(data, "name"), field(data, "expected"))

        async def undo_fork(request: Request) -> Any:
            data = await body(request)
            return await explorer.undo_fork(field(data, "session"), field(data, "expected"))

        actions = (("restore", restore), ("fork", fork), ("undo-fork", undo_fork), ("checkpoint", checkpoint))
        for path, fn in actions:
            routes.append(Route(f"/api/actions/{path}", _guarded(fn), methods=["POST"]))

    app = Starlette(routes=routes, max_body_size=MAX_BODY)
    return HostCheck(app, hosts)


class _Forbidden(Exception):
    pass


def _guarded(fn: Handler) -> Callable[[Request], Awaitable[Response]]:
    inner = _endpoint(fn)

    async def run(request: Request) -> Response:
        try:
            return await inner(request)
        except _Forbidden as exc:
            return json_response({"error": str(exc), "type": "Forbidden"}, 403)

    return run


__all__ = ["create_app"]
