"""A stand-in forward proxy on 127.0.0.1: records every request (plain-HTTP proxying sends the
whole URL in the request line; HTTPS sends CONNECT) and answers 502 Bad Gateway.

Used to prove that model traffic never goes through HTTP(S)_PROXY / ALL_PROXY.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


class RecordingProxy:
    def __init__(self) -> None:
        self.requests: list[
            str
        ] = []  # request lines, e.g. "POST http://127.0.0.1:81/v1/... HTTP/1.1"
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format, *args):  # noqa: A002 - keep test output quiet
                pass

            def _any(self) -> None:
                proxy.requests.append(self.requestline)
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                self.send_response(502)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST = do_CONNECT = do_PUT = _any  # noqa: N815

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def proxy_everywhere(monkeypatch) -> Iterator[RecordingProxy]:
    """A recording proxy that every proxy variable of the environment points at, with no
    NO_PROXY exemption (not even for loopback)."""
    proxy = RecordingProxy()
    for name in (
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ):
        monkeypatch.setenv(name, proxy.url)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    yield proxy
    proxy.stop()
