"""A loopback HTTP proxy in front of a real S3 server, to make the faults the S3 tests need.

``mode`` (settable while it runs):

- ``"pass"``: forward everything as it is.
- ``"ignore-conditions"``: drop ``If-None-Match`` and ``If-Match`` from PUTs, as s3rver does
  (the server behind then overwrites whatever is there).
- ``"lose-reply"``: forward PUTs of ref objects (``/refs/``), then close the connection without
  answering: the write landed, the client cannot know.
- ``"drop"``: close the connection on PUTs of ref objects without forwarding them.
- ``"conflict-once"``: answer the next PUT of a ref object with 409 ConditionalRequestConflict
  (AWS's answer while another conditional write of the key is in progress) without
  forwarding it, then pass everything.

Only the request line, headers and body are forwarded (moto does not check signatures).
"""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal

Mode = Literal["pass", "ignore-conditions", "lose-reply", "drop", "conflict-once"]

CONFLICT = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>ConditionalRequestConflict</Code>'
    b"<Message>A conflicting conditional operation is currently in progress against this resource.</Message></Error>"
)


class S3Proxy:
    def __init__(self, upstream_port: int) -> None:
        self.mode: Mode = "pass"
        self.faults = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                ref_put = self.command == "PUT" and "/refs/" in self.path
                if proxy.mode == "ignore-conditions" and self.command == "PUT":
                    headers = {k: v for k, v in headers.items() if k.lower() not in ("if-none-match", "if-match")}
                if proxy.mode == "drop" and ref_put:
                    proxy.faults += 1
                    self.close_connection = True
                    return
                if proxy.mode == "conflict-once" and ref_put:
                    proxy.faults += 1
                    proxy.mode = "pass"
                    self.send_response_only(409, "Conflict")
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(CONFLICT)))
                    self.end_headers()
                    self.wfile.write(CONFLICT)
                    return
                conn = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=30)
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                finally:
                    conn.close()
                if proxy.mode == "lose-reply" and ref_put:
                    proxy.faults += 1
                    self.close_connection = True
                    return
                self.send_response_only(resp.status, resp.reason)
                head = self.command == "HEAD"  # no body: keep the object's Content-Length
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

    def __enter__(self) -> S3Proxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
