"""`tcflow serve`'s HTTP endpoints. Read-only; plain data in.

  GET /          the live dashboard (one self-contained page, no CDN)
  GET /traffic   JSON, tcflow.snapshot.document (as attach --json prints)
  GET /metrics   Prometheus text format, tcflow/exporters/prometheus.py
  GET /history   ?key=K&since=T: the dashboard's last 15 minutes (tcflow/exporters/history.py)
  GET /classes   the class catalogue (tcflow.classes.catalogue)
  GET /healthz   {"status": "ok", "interfaces": N, ...}; 503 when nothing is counted

HEAD works wherever GET does; any other method gets 405, other paths 404.

The server is built to stay up on a host where any local user can connect:
connections live in one asyncio loop, so an idle or slow one costs no
thread; a request head must arrive whole within REQUEST_TIMEOUT_S and fit in
MAX_HEAD_BYTES; at most MAX_CONNECTIONS are kept (a new one evicts the
oldest that is only waiting), and responses are built by WORKERS threads.
On a loopback address the Host header must name loopback (no DNS rebinding
from a browser); the dashboard carries a Content-Security-Policy.

Each request is answered from a snapshot read after it arrived; nothing
polls. Concurrent requests for the same document share one read and one
rendering (``Coalesced``): with 100 interfaces a /metrics body is about
360 KB and takes tens of ms of Python to render.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gzip
import ipaddress
import json
import os
import resource
import socket
import threading
import time
import urllib.parse
from typing import Any, Callable, Mapping, Optional

from prometheus_client import CONTENT_TYPE_LATEST

from ..classes import catalogue
from ..snapshot import Snapshot, document
from . import prometheus
from .history import ALL, History

STATIC = os.path.join(os.path.dirname(__file__), "static")
MAX_CONNECTIONS = 1024
MAX_HEAD_BYTES = 16 * 1024
MAX_BODY_BYTES = 64 * 1024     # read and dropped: these endpoints take no body
REQUEST_TIMEOUT_S = 10.0       # from waiting for a request to having its whole head
WRITE_TIMEOUT_S = 10.0
WORKERS = 4
CSP = ("default-src 'none'; script-src 'self'; connect-src 'self'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
NOT_FOUND = b"not found: try /, /traffic, /metrics, /history, /classes, /healthz\n"
LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1"}

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
        return out


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


class AsyncCoalesced:
    """Coalesced for the event loop: requests that arrive while a rendering
    runs (in a worker) share the next one, which starts after they arrived.
    However many scrapes wait, one worker renders for all of them."""

    def __init__(self, fn: Callable[[], bytes], pool: concurrent.futures.Executor):
        self.fn, self.pool = fn, pool
        self.running: Optional[asyncio.Future[bytes]] = None
        self.next: Optional[asyncio.Future[bytes]] = None

    async def __call__(self) -> bytes:
        loop = asyncio.get_running_loop()
        if self.running is None:
            self.running = loop.run_in_executor(self.pool, self.fn)
            self.running.add_done_callback(self._done)
            return await asyncio.shield(self.running)
        if self.next is None:
            self.next = loop.create_future()
        return await asyncio.shield(self.next)

    def _done(self, fut: "asyncio.Future[bytes]") -> None:
        self.running, waiting, self.next = None, self.next, None
        if waiting is None:
            return
        self.running = asyncio.get_running_loop().run_in_executor(self.pool, self.fn)
        self.running.add_done_callback(self._done)
        self.running.add_done_callback(lambda f: _settle(waiting, f))


def _settle(target: "asyncio.Future[bytes]", source: "asyncio.Future[bytes]") -> None:
    if target.cancelled():
        return
    if source.exception() is not None:
        target.set_exception(source.exception())  # type: ignore[arg-type]
    else:
        target.set_result(source.result())


def _page(name: str) -> bytes:
    with open(os.path.join(STATIC, name), "rb") as f:
        return f.read()


class Endpoints:
    """Request -> reply. Runs in the event loop; renderings go to the workers."""

    def __init__(self, source: Source, pool: concurrent.futures.Executor):
        self.source, self.pool = source, pool
        registry = prometheus.registry(prometheus.TcflowCollector(
            source.snapshot, source.program_stats if source._stats is not None else None,
            source.health if source._health is not None else None, source.top_flows))
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
        if path == "/metrics":
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
        return 404, "text/plain; charset=utf-8", NOT_FOUND, {}


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


def _host_ok(host_header: Optional[str], loopback: bool) -> bool:
    """On a loopback listener, a browser tricked by DNS rebinding sends its own
    name as Host: only loopback names are served. No Host (HTTP/1.0) is fine."""
    if not loopback or host_header is None:
        return True
    host = host_header.strip().lower()
    if host.startswith("["):
        host = host[1:].split("]", 1)[0]
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host in LOOPBACK_HOSTS


class Server:
    """The HTTP server on its own thread and event loop. ``start()`` binds
    (errors surface at once), ``close()`` stops it and waits."""

    def __init__(self, host: str, port: int, source: Source):
        self.loopback = is_loopback(host)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.sock.bind((host, port))
            self.sock.listen(128)  # concurrent scrapers must not wait out SYN retransmits
        except OSError:
            self.sock.close()
            raise
        self.pool = concurrent.futures.ThreadPoolExecutor(WORKERS, thread_name_prefix="tcflow-http-worker")
        self.endpoints = Endpoints(source, self.pool)
        self.loop = asyncio.new_event_loop()
        self.conns: dict[asyncio.StreamWriter, list[Any]] = {}  # writer -> [since, busy]
        self.thread = threading.Thread(target=self._run, name="tcflow-http", daemon=True)
        self._server: Optional[asyncio.base_events.Server] = None

    def start(self) -> "Server":
        _enough_fds(MAX_CONNECTIONS + 256)
        self.thread.start()
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.set_exception_handler(lambda loop, context: None)  # a client's failure is not news
        self._server = self.loop.run_until_complete(
            asyncio.start_server(self._client, sock=self.sock, limit=MAX_HEAD_BYTES))
        self.loop.run_forever()

    def close(self) -> None:
        if self.thread.is_alive():
            def stop() -> None:
                if self._server is not None:
                    self._server.close()
                for w in list(self.conns):
                    w.transport.abort()
                self.loop.stop()

            self.loop.call_soon_threadsafe(stop)
            self.thread.join(timeout=10)
        self.sock.close()
        self.pool.shutdown(wait=False, cancel_futures=True)
        if not self.thread.is_alive():
            self.loop.close()

    def _make_room(self) -> None:
        """At the cap, the oldest connection that is only waiting goes."""
        idle = [(v[0], w) for w, v in self.conns.items() if not v[1]]
        if idle:
            min(idle, key=lambda t: t[0])[1].transport.abort()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self.conns) >= MAX_CONNECTIONS:
            self._make_room()
        state = self.conns[writer] = [time.monotonic(), False]
        try:
            while await self._one(reader, writer, state):
                state[0], state[1] = time.monotonic(), False
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, asyncio.LimitOverrunError,
                asyncio.CancelledError, ValueError):
            pass  # the client went away, stalled or sent garbage: nothing to tell anyone
        finally:
            self.conns.pop(writer, None)
            writer.transport.abort()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, state: list[Any]) -> bool:
        """One request and its reply; False when the connection should close."""
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT_S)
        except asyncio.LimitOverrunError:
            await self._send(writer, (431, "text/plain", b"request head too large\n", {}), "GET", False)
            return False
        state[1] = True
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            await self._send(writer, (400, "text/plain", b"bad request\n", {}), "GET", False)
            return False
        method, target, version = parts
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
        if "transfer-encoding" in headers:
            await self._send(writer, (411, "text/plain", b"no chunked bodies here\n", {}), method, False)
            return False
        length = headers.get("content-length", "0")
        if not length.isdigit() or int(length) > MAX_BODY_BYTES:
            await self._send(writer, (413, "text/plain", b"no bodies here\n", {}), method, False)
            return False
        if int(length):
            await asyncio.wait_for(reader.readexactly(int(length)), REQUEST_TIMEOUT_S)  # read, then dropped
        if not _host_ok(headers.get("host"), self.loopback):
            reply: Reply = (403, "text/plain; charset=utf-8", b"this server answers to localhost only\n", {})
        else:
            try:
                reply = await self.endpoints(method, target, headers)
            except Exception as e:  # keep serving; say what broke, in one line
                reply = (500, "text/plain; charset=utf-8", f"tcflow: {type(e).__name__}: {e}\n".encode(), {})
        await self._send(writer, reply, method, keep)
        return keep

    async def _send(self, writer: asyncio.StreamWriter, reply: Reply, method: str, keep: bool) -> None:
        code, ctype, body, extra = reply
        head = [f"HTTP/1.1 {code} {_REASONS.get(code, 'Status')}", "Server: tcflow", f"Content-Type: {ctype}",
                f"Content-Length: {len(body)}", "Cache-Control: no-store", "X-Content-Type-Options: nosniff",
                "Referrer-Policy: no-referrer", f"Connection: {'keep-alive' if keep else 'close'}"]
        head += [f"{k}: {v}" for k, v in extra.items()]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        if method != "HEAD":
            writer.write(body)
        await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT_S)


_REASONS = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
            411: "Length Required", 413: "Payload Too Large", 431: "Request Header Fields Too Large",
            500: "Internal Server Error", 503: "Service Unavailable"}


def _enough_fds(want: int) -> None:
    """Raise the soft fd limit so that MAX_CONNECTIONS fit (never above the hard one)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want if hard == resource.RLIM_INFINITY else min(want, hard), hard))


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def make_server(host: str, port: int, source: Source) -> Server:
    """Bind now (so a busy port is an error at once); serve after start()."""
    return Server(host, port, source)
