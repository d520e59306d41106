"""A small HTTP service that screens uploaded digit images with EdgeGuard, on the standard library alone.

    python examples/service.py --port 8080            # serves on 127.0.0.1:8080 (--host 0.0.0.0 for others)
    curl --data-binary @examples/digit_7.png 'http://127.0.0.1:8080/screen?source=digit_7.png'

``POST /screen`` takes an image file's bytes as the request body (PNG, JPEG, BMP, PNM, TIFF or .npy; the format is
sniffed from the content, not taken from a header) and answers the verdict as JSON, ``Verdict.to_dict()``: the
label, the verdict and its reasons, the p-values, and ``bundle_id``, the model bundle that decided. ``source`` (a
query parameter) is echoed as the verdict's ``source`` and named in errors. ``GET /health`` answers the bundle's
name and id.

Errors are JSON too, ``{"error": "..."}`` in one line: 400 for bytes that cannot be read safely or hold no digit
(the refusals of ``edgeguard detect``: ``Guard.screen_bytes`` uses the same decoder), 411 without a
Content-Length, 413 for a body over ``--max-bytes``, 404 for another path. One ``Guard`` serves every request
(it is thread-safe); each request gets its own thread (``ThreadingHTTPServer``).

This is an example to start from, not a hardened server: put it behind a reverse proxy that sets time limits
and TLS before it faces the internet.
"""

from __future__ import annotations

import argparse
import json
import logging
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from edgeguard import Guard
from edgeguard.errors import InputError

log = logging.getLogger("edgeguard.service")

MAX_BYTES = 16 * 1024 * 1024  # largest upload accepted by default (a 12 MP JPEG is a few MB)


def make_server(guard: Guard, host: str = "127.0.0.1", port: int = 0, *, max_bytes: int = MAX_BYTES
                ) -> ThreadingHTTPServer:
    """A server bound to ``host:port`` (port 0: any free port; ``server.server_address`` says which) that screens
    with ``guard``. Run it with ``serve_forever()``; stop it with ``shutdown()`` and ``server_close()``."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "edgeguard-example"
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            if urlsplit(self.path).path != "/health":
                self._send(HTTPStatus.NOT_FOUND, {"error": "not found: GET /health or POST /screen"})
                return
            self._send(HTTPStatus.OK, {"status": "ok", "bundle": guard.bundle.info.name,
                                       "bundle_id": guard.bundle_id})

        def do_POST(self) -> None:
            url = urlsplit(self.path)
            if url.path != "/screen":
                self._send(HTTPStatus.NOT_FOUND, {"error": "not found: POST /screen"}, drain=True)
                return
            length = self._content_length()
            if length is None:
                return
            source = parse_qs(url.query).get("source", [None])[0]
            data = self.rfile.read(length)
            try:
                verdict = guard.screen_bytes(data, source=source)
            except InputError as e:
                self._send(HTTPStatus.BAD_REQUEST, {"error": str(e)})
                return
            self._send(HTTPStatus.OK, verdict.to_dict())

        def _content_length(self) -> int | None:
            """The body's length, or None after answering why it will not be read."""
            text = self.headers.get("Content-Length")
            if text is None or not text.strip().isdigit():
                self._send(HTTPStatus.LENGTH_REQUIRED, {"error": "send the image as the body, with a Content-Length"},
                           close=True)
                return None
            length = int(text)
            if length > max_bytes:
                self._send(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                           {"error": f"the body is too large ({length:,} bytes; the limit is {max_bytes:,})"},
                           close=True)
                return None
            return length

        def _send(self, status: HTTPStatus, body: dict[str, Any], *, drain: bool = False, close: bool = False) -> None:
            if drain:  # read a body this answer ignores, so the connection stays usable
                text = self.headers.get("Content-Length", "0").strip()
                length = int(text) if text.isdigit() else 0
                if length > max_bytes:
                    close = True
                else:
                    self.rfile.read(length)
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            if close:  # the unread body must not be taken for the next request
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            log.info("%s %s", self.address_string(), format % args)

    return ThreadingHTTPServer((host, port), Handler)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--bundle", default=None, help="model bundle folder (default: the shipped one)")
    parser.add_argument("--providers", default="auto", help="auto, cpu, cuda or onnxruntime provider names")
    parser.add_argument("--max-bytes", type=int, default=MAX_BYTES, help="largest upload accepted")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    guard = Guard.load(args.bundle, providers=args.providers)  # numba kernels: a long-running process
    guard.warmup()
    server = make_server(guard, args.host, args.port, max_bytes=args.max_bytes)
    host, port = server.server_address[:2]
    log.info("screening on http://%s:%s/screen (bundle %s)", host, port, guard.bundle_id)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
