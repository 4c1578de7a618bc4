"""`tcflow serve`'s HTTP server, built to stay up on a host where any local
user can connect: connections live in one asyncio loop, so an idle or slow
one costs no thread; a request head must arrive whole within
REQUEST_TIMEOUT_S and fit in MAX_HEAD_BYTES; at most MAX_CONNECTIONS are
kept (a new one evicts the oldest that is only waiting), and responses are
built by WORKERS threads (routes.py). On a loopback address the Host header
must name loopback (no DNS rebinding from a browser); the dashboard carries
a Content-Security-Policy. It listens on one or more addresses; with a web
configuration (webconfig.py: exporter-toolkit's file), each new connection
takes the configuration current at that moment: TLS (the handshake within
REQUEST_TIMEOUT_S), client certificates, basic auth and response headers.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import http
import ipaddress
import resource
import socket
import threading
import time
from typing import Any, Optional

from tcflow.output.http.routes import Endpoints, Reply, Source
from tcflow.output.http.webconfig import Reloading, WebConfig

MAX_CONNECTIONS = 1024
MAX_HEAD_BYTES = 16 * 1024
MAX_BODY_BYTES = 64 * 1024     # read and dropped: these endpoints take no body
REQUEST_TIMEOUT_S = 10.0       # from waiting for a request to having its whole head
WRITE_TIMEOUT_S = 10.0
WORKERS = 4
LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "::1"}


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
    """The HTTP server on its own thread and event loop. ``listen``: (host,
    port) pairs; ``web``: the web configuration, or None (plain HTTP, no
    auth). ``start()`` binds (errors surface at once), ``close()`` stops it
    and waits."""

    def __init__(self, listen: list[tuple[str, int]], source: Source, web: Optional[Reloading] = None,
                 metrics_path: str = "/metrics"):
        self.socks: list[tuple[socket.socket, bool]] = []  # (listening socket, on loopback)
        try:
            for host, port in listen:
                sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
                self.socks.append((sock, is_loopback(host)))
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((host, port))
                sock.listen(128)  # concurrent scrapers must not wait out SYN retransmits
        except OSError:
            for sock, _ in self.socks:
                sock.close()
            raise
        self.web = web
        self.pool = concurrent.futures.ThreadPoolExecutor(WORKERS, thread_name_prefix="tcflow-http-worker")
        self.endpoints = Endpoints(source, self.pool, metrics_path)
        self.loop = asyncio.new_event_loop()
        self.conns: dict[asyncio.StreamWriter, list[Any]] = {}  # writer -> [since, busy]
        self.thread = threading.Thread(target=self._run, name="tcflow-http", daemon=True)
        self._servers: list[asyncio.base_events.Server] = []

    def start(self) -> "Server":
        _enough_fds(MAX_CONNECTIONS + 256)
        self.thread.start()
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.set_exception_handler(lambda loop, context: None)  # a client's failure is not news
        for sock, loopback in self.socks:
            self._servers.append(self.loop.run_until_complete(
                asyncio.start_server(functools.partial(self._client, loopback=loopback), sock=sock,
                                     limit=MAX_HEAD_BYTES)))
        self.loop.run_forever()

    def close(self) -> None:
        if self.thread.is_alive():
            def stop() -> None:
                for server in self._servers:
                    server.close()
                for w in list(self.conns):
                    w.transport.abort()
                self.loop.stop()

            self.loop.call_soon_threadsafe(stop)
            self.thread.join(timeout=10)
        for sock, _ in self.socks:
            sock.close()
        self.pool.shutdown(wait=False, cancel_futures=True)
        if not self.thread.is_alive():
            self.loop.close()

    def _make_room(self) -> None:
        """At the cap, the oldest connection that is only waiting goes."""
        idle = [(v[0], w) for w, v in self.conns.items() if not v[1]]
        if idle:
            min(idle, key=lambda t: t[0])[1].transport.abort()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, loopback: bool) -> None:
        if len(self.conns) >= MAX_CONNECTIONS:
            self._make_room()
        state = self.conns[writer] = [time.monotonic(), False]
        try:
            web = self.web.current() if self.web is not None else None
            if web is not None and web.ssl is not None:
                await writer.start_tls(web.ssl, ssl_handshake_timeout=REQUEST_TIMEOUT_S)
                if web.client_allowed_sans and not _san_allowed(writer.get_extra_info("peercert"),
                                                                web.client_allowed_sans):
                    return
            while await self._one(reader, writer, state, loopback, web):
                state[0], state[1] = time.monotonic(), False
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, asyncio.LimitOverrunError,
                asyncio.CancelledError, ValueError, ConnectionError):
            pass  # the client went away, stalled or sent garbage: nothing to tell anyone
        finally:
            self.conns.pop(writer, None)
            writer.transport.abort()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, state: list[Any],
                   loopback: bool, web: Optional[WebConfig]) -> bool:
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
        if not _host_ok(headers.get("host"), loopback):
            reply: Reply = (403, "text/plain; charset=utf-8", b"this server answers to localhost only\n", {})
        elif web is not None and web.users and not await self._authorized(web, headers.get("authorization")):
            reply = (401, "text/plain; charset=utf-8", b"unauthorized\n",
                     {"WWW-Authenticate": 'Basic realm="tcflow", charset="UTF-8"'})
        else:
            try:
                reply = await self.endpoints(method, target, headers)
            except Exception as e:  # keep serving; say what broke, in one line
                reply = (500, "text/plain; charset=utf-8", f"tcflow: {type(e).__name__}: {e}\n".encode(), {})
        if web is not None and web.headers:
            reply = (reply[0], reply[1], reply[2], {**reply[3], **web.headers})
        await self._send(writer, reply, method, keep)
        return keep

    async def _authorized(self, web: WebConfig, header: Optional[str]) -> bool:
        """bcrypt is slow by design: checked in a worker, not in the event loop."""
        assert self.web is not None
        reloading = self.web
        return await asyncio.get_running_loop().run_in_executor(
            self.pool, lambda: reloading.authorized(web, header))

    async def _send(self, writer: asyncio.StreamWriter, reply: Reply, method: str, keep: bool) -> None:
        code, ctype, body, extra = reply
        fields = {"Server": "tcflow", "Content-Type": ctype, "Content-Length": str(len(body)),
                  "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
                  "Connection": "keep-alive" if keep else "close", **extra}
        head = [f"HTTP/1.1 {code} {_reason(code)}"] + [f"{k}: {v}" for k, v in fields.items()]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        if method != "HEAD":
            writer.write(body)
        await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT_S)


def _reason(code: int) -> str:
    try:
        return http.HTTPStatus(code).phrase
    except ValueError:
        return "Status"


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


def _san_allowed(cert: Any, allowed: list[str]) -> bool:
    """The client certificate names one of ``allowed`` among its DNS, IP,
    email or URI subject alternative names (exporter-toolkit's client_allowed_sans)."""
    sans = {v for _, v in (cert or {}).get("subjectAltName", ())}
    return any(a in sans for a in allowed)


def make_server(listen: list[tuple[str, int]], source: Source, web: Optional[Reloading] = None,
                metrics_path: str = "/metrics") -> Server:
    """Bind now (so a busy port is an error at once); serve after start()."""
    return Server(listen, source, web, metrics_path)
