"""A loopback proxy in front of a real S3 server whose behaviour is chosen per request.

``rule(command, path)`` returns ``"pass"``, ``"lose-reply"`` (forward, then close without
answering), ``"drop"`` (close without forwarding), ``("delay", s)`` (wait before forwarding) or
``("delay-reply", s)`` (forward, then wait before answering). ``log`` keeps (monotonic time the
reply came back from the server, command, path, status) per forwarded request. Only the
request line, headers and body are forwarded (moto does not check signatures).
"""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class RuleProxy:
    def __init__(self, upstream_port: int) -> None:
        self.rule: Callable[[str, str], Any] = lambda c, p: "pass"
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
                self.send_response_only(resp.status, resp.reason)
                head = self.command == "HEAD"
                for key, value in resp.getheaders():
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


def via(proxy: RuleProxy, url: str) -> str:
    """The same store, reached through the proxy."""
    port = url.split("127.0.0.1:")[1].split("&")[0]
    return url.replace(f"endpoint=http://127.0.0.1:{port}", f"endpoint={proxy.endpoint}")
