#!/usr/bin/env python3
"""A tiny key-value service over HTTP/1.1, and its client: the application
examples/ci/test_kvstore.py proves facts about, on the wire.

    kvstore.py serve --bind 198.18.0.2 --port 8080
    kvstore.py put --server 198.18.0.2:8080 colour blue size 9   # one connection, one request per pair
    kvstore.py get --server 198.18.0.2:8080 colour

The client speaks HTTP/1.1 over one socket of its own (keep-alive), tries
to connect ``--retries`` more times if refused, and prints what it wrote to
and read from the socket: {"sent": bytes, "received": bytes, "attempts": n}.
Standard library only.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    store: dict[str, bytes] = {}

    def do_PUT(self) -> None:  # noqa: N802 - http.server's naming
        n = int(self.headers.get("Content-Length", "0"))
        self.store[self.path] = self.rfile.read(n)
        self._reply(204, b"")

    def do_GET(self) -> None:  # noqa: N802
        value = self.store.get(self.path)
        self._reply(200 if value is not None else 404, value or b"")

    def _reply(self, code: int, body: bytes) -> None:
        self.send_response_only(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def connect(server: str, retries: int, wait: float) -> tuple[socket.socket, int]:
    host, _, port = server.rpartition(":")
    host = host.strip("[]")
    for attempt in range(1, retries + 2):
        try:
            return socket.create_connection((host, int(port)), timeout=5), attempt
        except ConnectionRefusedError:
            if attempt > retries:
                raise
            time.sleep(wait)
    raise AssertionError("unreachable")


def exchange(sock: socket.socket, request: bytes) -> bytes:
    """Send one request; read one response (headers, then Content-Length bytes)."""
    sock.sendall(request)
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("server closed")
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    while len(body) < length:
        body += sock.recv(4096)
    return buf[: len(head) + 4] + body


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--bind", required=True)
    s.add_argument("--port", type=int, default=8080)
    for name in ("put", "get"):
        c = sub.add_parser(name)
        c.add_argument("--server", required=True, help="ADDRESS:PORT ([IPv6]:PORT)")
        c.add_argument("--retries", type=int, default=0)
        c.add_argument("--retry-wait", type=float, default=0.1)
        c.add_argument("words", nargs="+")
    args = ap.parse_args(argv)
    if args.command == "serve":
        ThreadingHTTPServer.address_family = socket.AF_INET6 if ":" in args.bind else socket.AF_INET
        ThreadingHTTPServer((args.bind, args.port), Handler).serve_forever()
        return 0
    try:
        sock, attempts = connect(args.server, args.retries, args.retry_wait)
    except ConnectionRefusedError:
        print(json.dumps({"error": "refused", "attempts": args.retries + 1}))
        return 1
    sent = received = 0
    with sock:
        host = args.server.encode()
        if args.command == "put":
            pairs = zip(args.words[::2], args.words[1::2], strict=True)
            requests = [b"PUT /%s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n\r\n%s"
                        % (k.encode(), host, len(v.encode()), v.encode()) for k, v in pairs]
        else:
            requests = [b"GET /%s HTTP/1.1\r\nHost: %s\r\n\r\n" % (k.encode(), host) for k in args.words]
        for request in requests:
            sent += len(request)
            received += len(exchange(sock, request))
    print(json.dumps({"sent": sent, "received": received, "attempts": attempts}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
