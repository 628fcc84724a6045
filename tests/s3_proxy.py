"""A loopback HTTP proxy in front of a real S3 server, to make the faults the S3 tests need.

``RuleProxy.rule(command, path)`` chooses per request: ``"pass"``, ``"lose-reply"`` (forward,
then close without answering: the write landed, the client cannot know), ``"drop"`` (close
without forwarding), ``"strip-conditions"`` (forward without ``If-None-Match``/``If-Match``, as
s3rver ignores them), ``("delay", s)`` (wait before forwarding), ``("delay-reply", s)``
(forward, then wait before answering) or ``("answer", status, body)`` (answer without
forwarding). ``log`` keeps (monotonic time the reply came back, command, path, status) per
forwarded request.

``S3Proxy`` is a RuleProxy driven by one ``mode`` (settable while it runs), counting in
``faults`` the ref-object PUTs it tampered with:

- ``"pass"``: forward everything as it is;
- ``"ignore-conditions"``: strip the conditions of every PUT;
- ``"lose-reply"`` / ``"drop"``: as the rules above, for PUTs of ref objects (``/refs/``);
- ``"conflict-once"``: answer the next PUT of a ref object with 409 ConditionalRequestConflict
  (AWS's answer while another conditional write of the key is in progress), then pass.

Only the request line, headers and body are forwarded (moto does not check signatures).
"""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

Mode = Literal["pass", "ignore-conditions", "lose-reply", "drop", "conflict-once"]

CONFLICT = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>ConditionalRequestConflict</Code>'
    b"<Message>A conflicting conditional operation is currently in progress against this resource.</Message></Error>"
)


class RuleProxy:
    def __init__(self, upstream_port: int) -> None:
        self.rule: Callable[[str, str], Any] = lambda command, path: "pass"
        self.log: list[tuple[float, str, str, int]] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                action = proxy.rule(self.command, self.path)
                if action == "drop":
                    self.close_connection = True
                    return
                if action == "strip-conditions":
                    headers = {k: v for k, v in headers.items() if k.lower() not in ("if-none-match", "if-match")}
                if isinstance(action, tuple) and action[0] == "answer":
                    self._answer(action[1], [("Content-Type", "application/xml")], action[2])
                    return
                if isinstance(action, tuple) and action[0] == "delay":
                    time.sleep(action[1])
                conn = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=30)
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                finally:
                    conn.close()
                proxy.log.append((time.monotonic(), self.command, self.path, resp.status))
                if action == "lose-reply":
                    self.close_connection = True
                    return
                if isinstance(action, tuple) and action[0] == "delay-reply":
                    time.sleep(action[1])
                self._answer(resp.status, resp.getheaders(), data)

            def _answer(self, status: int, headers: list[tuple[str, str]], data: bytes) -> None:
                self.send_response_only(status)
                head = self.command == "HEAD"  # no body: keep the object's Content-Length
                for key, value in headers:
                    if key.lower() not in ("connection", "transfer-encoding") and (
                        head or key.lower() != "content-length"
                    ):
                        self.send_header(key, value)
                if not head:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if not head:
                    self.wfile.write(data)

            do_GET = do_PUT = do_HEAD = do_DELETE = do_POST = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> RuleProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


class S3Proxy(RuleProxy):
    def __init__(self, upstream_port: int) -> None:
        super().__init__(upstream_port)
        self.mode: Mode = "pass"
        self.faults = 0
        self.rule = self._by_mode

    def _by_mode(self, command: str, path: str) -> Any:
        if self.mode == "ignore-conditions" and command == "PUT":
            return "strip-conditions"
        if self.mode == "pass" or command != "PUT" or "/refs/" not in path:
            return "pass"
        self.faults += 1
        if self.mode == "conflict-once":
            self.mode = "pass"
            return ("answer", 409, CONFLICT)
        return self.mode  # "lose-reply" or "drop"


def via(proxy: RuleProxy, url: str) -> str:
    """The same store, reached through the proxy."""
    port = url.split("127.0.0.1:")[1].split("&")[0]
    return url.replace(f"endpoint=http://127.0.0.1:{port}", f"endpoint={proxy.endpoint}")
