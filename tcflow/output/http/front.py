"""`tcflow serve`'s HTTP front: the part that faces the network, run in a
process of its own without privilege (child.py; server.py starts it). It
holds the listening sockets and a connection to the agent (ipc.py), and
nothing else: no BPF object, pin or netlink socket. Built to stay up on a
host where any local user can connect: connections live in one asyncio loop, so an idle or slow
one costs no thread; a request head must arrive whole within
REQUEST_TIMEOUT_S and fit in MAX_HEAD_BYTES; at most MAX_CONNECTIONS are
kept (a new one evicts the oldest that is only waiting), and responses are
built by the agent (routes.py, asked through ipc.py). On a loopback address the Host header
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
import socket
import time
from typing import Any, Awaitable, Callable, Optional, Protocol

from tcflow.output.http.webconfig import WebConfig

Reply = tuple[int, str, bytes, dict[str, str]]
Backend = Callable[[str, str, dict[str, str]], Awaitable[Reply]]  # (method, target, headers) -> reply

MAX_CONNECTIONS = 1024
MAX_HEAD_BYTES = 16 * 1024
MAX_BODY_BYTES = 64 * 1024     # read and dropped: these endpoints take no body
REQUEST_TIMEOUT_S = 10.0       # from waiting for a request to having its whole head
WRITE_TIMEOUT_S = 10.0
WORKERS = 2  # bcrypt checks
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


class WebSource(Protocol):
    """Where the front takes its web configuration from, per connection."""

    async def current(self) -> Optional[WebConfig]: ...

    def authorized(self, cfg: WebConfig, header: Optional[str]) -> bool: ...


class Front:
    """Serves ``socks`` ((listening socket, on loopback) pairs) in the
    running event loop; replies come from ``backend``, TLS and auth from
    ``web`` (None: plain HTTP, no auth)."""

    def __init__(self, socks: list[tuple[socket.socket, bool]], backend: Backend, web: Optional[WebSource]):
        self.socks, self.backend, self.web = socks, backend, web
        self.pool = concurrent.futures.ThreadPoolExecutor(WORKERS, thread_name_prefix="tcflow-http-auth")
        self.conns: dict[asyncio.StreamWriter, list[Any]] = {}  # writer -> [since, busy]
        self.servers: list[asyncio.base_events.Server] = []

    async def start(self) -> None:
        for sock, loopback in self.socks:
            self.servers.append(await asyncio.start_server(functools.partial(self._client, loopback=loopback),
                                                           sock=sock, limit=MAX_HEAD_BYTES))

    def close(self) -> None:
        for server in self.servers:
            server.close()
        for w in list(self.conns):
            w.transport.abort()
        self.pool.shutdown(wait=False, cancel_futures=True)

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
            web = None
            if self.web is not None:
                # Not a byte is read until the configuration is known: a
                # ClientHello read before start_tls() would be lost to TLS.
                writer.transport.pause_reading()  # type: ignore[attr-defined]
                web = await self.web.current()
                if web is None or web.ssl is None:
                    writer.transport.resume_reading()  # type: ignore[attr-defined]
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
                reply = await self.backend(method, target, {"accept-encoding": headers.get("accept-encoding", "")})
            except Exception as e:  # keep serving; say what broke, in one line
                reply = (500, "text/plain; charset=utf-8", f"tcflow: {type(e).__name__}: {e}\n".encode(), {})
        if web is not None and web.headers:
            reply = (reply[0], reply[1], reply[2], {**reply[3], **web.headers})
        await self._send(writer, reply, method, keep)
        return keep

    async def _authorized(self, web: WebConfig, header: Optional[str]) -> bool:
        """bcrypt is slow by design: checked in a worker, not in the event loop."""
        assert self.web is not None
        source = self.web
        return await asyncio.get_running_loop().run_in_executor(self.pool, lambda: source.authorized(web, header))

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
