"""`tcflow serve`'s HTTP endpoints. Read-only; plain data in.

  GET /          the live dashboard (one self-contained page, no CDN)
  GET /traffic   JSON, tcflow.snapshot.document (as attach --json prints)
  GET /metrics   Prometheus text format, tcflow/exporters/prometheus.py
  GET /classes   the class catalogue (tcflow.classes.catalogue), for the dashboard
  GET /healthz   {"status": "ok", "interfaces": N}

HEAD works wherever GET does; other methods get 405, other paths 404.
Each request is answered from a snapshot read after it arrived; nothing
polls. Concurrent requests for the same document share one read and one
rendering (``Coalesced``): with 100 interfaces a /metrics body is about
600 KB and takes some 50 ms of Python to render, so 50 scrapers at once
would otherwise queue behind each other on the GIL.
"""

from __future__ import annotations

import gzip
import json
import os
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Mapping, Optional

from prometheus_client import CONTENT_TYPE_LATEST

from ..classes import catalogue
from ..snapshot import Snapshot, document
from . import prometheus

STATIC = os.path.join(os.path.dirname(__file__), "static")


class Source:
    """What the endpoints read: snapshots and program statistics, serialised by a lock."""

    def __init__(self, snapshot: Callable[[], Snapshot],
                 program_stats: Optional[Callable[[], Mapping[str, tuple[int, int]]]] = None):
        self.lock = threading.Lock()
        self._snapshot = snapshot
        self._stats = program_stats

    def snapshot(self) -> Snapshot:
        with self.lock:
            return self._snapshot()

    def program_stats(self) -> Mapping[str, tuple[int, int]]:
        if self._stats is None:
            return {}
        with self.lock:
            return self._stats()


class Coalesced:
    """Call ``fn`` for each caller, except that callers arriving while a call
    is in flight share the next call, which starts after they arrived: every
    result is fresh for every caller it is given to."""

    def __init__(self, fn: Callable[[], bytes]):
        self.fn = fn
        self.cond = threading.Condition()
        self.started = 0      # calls begun
        self.finished = 0     # calls done (in order: one at a time)
        self.running = False
        self.result: bytes = b""
        self.error: Optional[BaseException] = None

    def __call__(self) -> bytes:
        with self.cond:
            target = self.started + 1  # the first call that begins after this point
            while self.finished < target:
                if self.running:
                    self.cond.wait()
                    continue
                self.running = True
                self.started += 1
                gen = self.started
                self.cond.release()
                try:
                    result, error = self.fn(), None
                except BaseException as e:  # handed to every caller of this round
                    result, error = b"", e
                finally:
                    self.cond.acquire()
                self.result, self.error, self.finished, self.running = result, error, gen, False
                self.cond.notify_all()
            if self.error is not None:
                raise self.error
            return self.result


def _page(name: str) -> bytes:
    with open(os.path.join(STATIC, name), "rb") as f:
        return f.read()


def make_handler(source: Source) -> type[BaseHTTPRequestHandler]:
    collector = prometheus.TcflowCollector(source.snapshot,
                                           source.program_stats if source._stats is not None else None)
    registry = prometheus.registry(collector)
    metrics = Coalesced(lambda: prometheus.render(registry))
    # Prometheus asks for gzip; 100 interfaces shrink from about 600 KB to a
    # few tens of KB. Level 1: the rendering, not the compression, is the cost.
    metrics_gz = Coalesced(lambda: gzip.compress(metrics(), 1))
    traffic_json = Coalesced(lambda: json.dumps(document(source.snapshot())).encode())
    pages = {"/": ("text/html; charset=utf-8", _page("dashboard.html")),
             "/dashboard.js": ("text/javascript; charset=utf-8", _page("dashboard.js")),
             "/classes": ("application/json", json.dumps(catalogue()).encode())}

    class Handler(BaseHTTPRequestHandler):
        server_version = "tcflow"
        sys_version = ""
        protocol_version = "HTTP/1.1"

        def _reply(self, code: int, ctype: str, body: bytes, extra: Optional[dict[str, str]] = None) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _get(self) -> None:
            path = self.path.split("?", 1)[0]
            if path in pages:
                self._reply(200, *pages[path])
            elif path == "/traffic":
                self._reply(200, "application/json", traffic_json())
            elif path == "/metrics":
                if "gzip" in self.headers.get("Accept-Encoding", ""):
                    self._reply(200, CONTENT_TYPE_LATEST, metrics_gz(), {"Content-Encoding": "gzip",
                                                                         "Vary": "Accept-Encoding"})
                else:
                    self._reply(200, CONTENT_TYPE_LATEST, metrics(), {"Vary": "Accept-Encoding"})
            elif path == "/healthz":
                n = len(source.snapshot().interfaces)
                self._reply(200, "application/json", json.dumps({"status": "ok", "interfaces": n}).encode())
            else:
                self._reply(404, "text/plain; charset=utf-8",
                            b"not found: try /, /traffic, /metrics, /classes, /healthz\n")

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            try:
                self._get()
            except Exception as e:  # keep serving; say what broke
                self._reply(500, "text/plain; charset=utf-8", f"tcflow: {type(e).__name__}: {e}\n".encode())

        do_HEAD = do_GET  # noqa: N815

        def _not_allowed(self) -> None:
            self._reply(405, "text/plain; charset=utf-8", b"read-only: GET and HEAD only\n", {"Allow": "GET, HEAD"})

        do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = _not_allowed  # noqa: N815

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass  # quiet: a scrape every few seconds is not news

    return Handler


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default listen backlog is 5: with more scrapers at once,
    # connections overflow it and wait out SYN retransmits (1, 3, 7 s...).
    request_queue_size = 128
    source: Source


def make_server(host: str, port: int, source: Source) -> Server:
    cls = Server
    if ":" in host:
        class Server6(Server):
            address_family = socket.AF_INET6

        cls = Server6
    srv = cls((host, port), make_handler(source))
    srv.source = source
    return srv
