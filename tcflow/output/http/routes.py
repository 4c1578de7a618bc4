"""`tcflow serve`'s endpoints: request -> reply. Read-only; plain data in.

  GET /          the live dashboard (one self-contained page, no CDN)
  GET /traffic   JSON, tcflow.model.snapshot.document (as attach --json prints)
  GET /metrics   Prometheus text format, tcflow/output/prometheus.py
  GET /history   ?key=K&since=T: the dashboard's last 15 minutes (tcflow/output/history.py)
  GET /classes   the class catalogue (tcflow.model.classes.catalogue)
  GET /healthz   {"status": "ok", "interfaces": N, ...}; 503 when nothing is counted

HEAD works wherever GET does; any other method gets 405, other paths 404.
Each request is answered from a snapshot read after it arrived; nothing
polls. Concurrent requests for the same document share one read and one
rendering (coalesce.py).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gzip
import json
import os
import threading
import urllib.parse
from typing import Any, Callable, Mapping, Optional

from prometheus_client import CONTENT_TYPE_LATEST

from tcflow.model.classes import catalogue
from tcflow.model.snapshot import Snapshot, document
from tcflow.output import prometheus
from tcflow.output.history import ALL, History
from tcflow.output.http.coalesce import AsyncCoalesced, Coalesced

STATIC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "static")
CSP = ("default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
PATHS = ("/", "/dashboard.js", "/traffic", "/history", "/classes", "/healthz")  # and the metrics path

Reply = tuple[int, str, bytes, dict[str, str]]


class Source:
    """What the endpoints read, serialised by a lock: snapshots, program
    statistics and the agent's health (interfaces, slots, programs)."""

    def __init__(self, snapshot: Callable[[], Snapshot],
                 program_stats: Optional[Callable[[], Mapping[str, tuple[int, int]]]] = None,
                 health: Optional[Callable[[], Mapping[str, Any]]] = None,
                 history: Optional[History] = None, top_flows: int = 0):
        self.lock = threading.Lock()
        self.history = history
        self.top_flows = top_flows
        self._snapshot = snapshot
        self._stats = program_stats
        self._health = health

    @property
    def has_program_stats(self) -> bool:
        return self._stats is not None

    @property
    def has_health(self) -> bool:
        return self._health is not None

    def snapshot(self) -> Snapshot:
        with self.lock:
            return self._snapshot()

    def program_stats(self) -> Mapping[str, tuple[int, int]]:
        if self._stats is None:
            return {}
        with self.lock:
            return self._stats()

    def health(self) -> dict[str, Any]:
        with self.lock:
            out = dict(self._health()) if self._health else {}
            out.setdefault("interfaces", len(self._snapshot().interfaces))
        if self.history is not None:
            out["history"] = self.history.size()
        return out


def _page(name: str) -> bytes:
    with open(os.path.join(STATIC, name), "rb") as f:
        return f.read()


class Endpoints:
    """Request -> reply. Runs in the event loop; renderings go to the workers."""

    def __init__(self, source: Source, pool: concurrent.futures.Executor, metrics_path: str = "/metrics"):
        self.source, self.pool, self.metrics_path = source, pool, metrics_path
        self.not_found = f"not found: try /, /traffic, {metrics_path}, /history, /classes, /healthz\n".encode()
        registry = prometheus.registry(prometheus.TcflowCollector(
            source.snapshot, source.program_stats if source.has_program_stats else None,
            source.health if source.has_health else None, source.top_flows))
        metrics = Coalesced(lambda: prometheus.render(registry))
        self.metrics = AsyncCoalesced(metrics, pool)
        # Prometheus asks for gzip; the rendering, not the compression, is the cost: level 1.
        self.metrics_gz = AsyncCoalesced(lambda: gzip.compress(metrics(), 1), pool)
        self.traffic = AsyncCoalesced(lambda: json.dumps(document(source.snapshot())).encode(), pool)
        self.health = AsyncCoalesced(lambda: json.dumps(source.health()).encode(), pool)
        self.pages = {"/": ("text/html; charset=utf-8", _page("dashboard.html")),
                      "/dashboard.js": ("text/javascript; charset=utf-8", _page("dashboard.js")),
                      "/classes": ("application/json", json.dumps(catalogue()).encode())}

    async def __call__(self, method: str, target: str, headers: Mapping[str, str]) -> Reply:
        if method not in ("GET", "HEAD"):
            return 405, "text/plain; charset=utf-8", b"read-only: GET and HEAD only\n", {"Allow": "GET, HEAD"}
        path, _, query = target.partition("?")
        if path in self.pages:
            ctype, body = self.pages[path]
            return 200, ctype, body, {"Content-Security-Policy": CSP} if path == "/" else {}
        if path == "/traffic":
            return 200, "application/json", await self.traffic(), {}
        if path == self.metrics_path:
            if "gzip" in headers.get("accept-encoding", ""):
                return 200, CONTENT_TYPE_LATEST, await self.metrics_gz(), {"Content-Encoding": "gzip",
                                                                           "Vary": "Accept-Encoding"}
            return 200, CONTENT_TYPE_LATEST, await self.metrics(), {"Vary": "Accept-Encoding"}
        if path == "/history" and self.source.history is not None:
            return await self.history_reply(query)
        if path == "/healthz":
            h = json.loads(await self.health())
            counting = h["interfaces"] > 0
            h["status"] = "ok" if counting else ("waiting" if h.get("following") else "no interface attached")
            code = 200 if counting or h.get("following") else 503
            return code, "application/json", json.dumps(h).encode(), {}
        return 404, "text/plain; charset=utf-8", self.not_found, {}


    async def history_reply(self, query: str) -> Reply:
        history = self.source.history
        assert history is not None
        try:
            q = urllib.parse.parse_qs(query, max_num_fields=4, strict_parsing=False, errors="strict")
            key = q.get("key", [ALL])[0]
            since = float(q.get("since", ["0"])[0])
            if since != since:  # NaN
                raise ValueError("since")
        except (ValueError, UnicodeDecodeError):
            return 400, "text/plain; charset=utf-8", b"usage: /history?key=IFACE&since=UNIX_TIME\n", {}
        body = await asyncio.get_running_loop().run_in_executor(
            self.pool, lambda: json.dumps(history.reply(key, since)).encode())
        return 200, "application/json", body, {}


