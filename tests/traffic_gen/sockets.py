"""Socket traffic between namespaces, with exact byte tallies.

Every function takes namespaces by name (under /run/netns) or path and makes
its sockets inside them (setns in this thread, then back), so the traffic is
the kernel's own: real TCP and UDP, whatever its segmentation. Each returns
what the sockets moved, and every wait is bounded.
"""

from __future__ import annotations

import ipaddress
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Callable, Optional, TypeVar

from tcflow.system.netns import resolve, run_in

TIMEOUT_S = 10.0
S = TypeVar("S", bound="_Sink")


def family_of(address: str) -> int:
    return socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET


def socket_in(ns: str, family: int, kind: int) -> socket.socket:
    """A socket made inside namespace ``ns`` (it stays there when used from anywhere)."""
    return run_in(resolve(ns).path, lambda: socket.socket(family, kind))


@dataclass(frozen=True)
class Sent:
    """What a sender handed its socket: ``payload`` bytes in ``messages``
    datagrams or writes, between ``local`` and ``remote`` (address, port)."""

    proto: str
    local: tuple[str, int]
    remote: tuple[str, int]
    payload: int
    messages: int


class _Sink:
    """A socket in namespace ``ns`` bound to ``address`` (port 0: any free
    one), served by ``_serve()`` in a thread of its own until close();
    ``received`` bytes so far."""

    def __init__(self, ns: str, address: str, port: int, kind: int):
        self.sock = socket_in(ns, family_of(address), kind)
        self.sock.bind((address, port))
        if kind == socket.SOCK_STREAM:
            self.sock.listen(16)
        self.sock.settimeout(0.1)  # so that the thread sees close() within 0.1 s
        self.address: tuple[str, int] = self.sock.getsockname()[:2]
        self.received = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()

    def __enter__(self: S) -> S:
        return self

    def __exit__(self, t: Optional[type[BaseException]], e: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self.close()


class UdpSink(_Sink):
    """A UDP socket in namespace ``ns`` on ``address`` taking every datagram,
    so a sender meets no ICMP "port unreachable". ``received``/``datagrams``
    so far; ``wait_for(n)`` waits (bounded) until n bytes came."""

    def __init__(self, ns: str, address: str, port: int = 0):
        super().__init__(ns, address, port, socket.SOCK_DGRAM)
        self.datagrams = 0
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65535)
            except socket.timeout:
                continue
            except OSError:
                return
            self.received += len(data)
            self.datagrams += 1

    def wait_for(self, payload: int, timeout: float = TIMEOUT_S) -> bool:
        end = time.monotonic() + timeout
        while self.received < payload and time.monotonic() < end:
            time.sleep(0.005)
        return self.received >= payload



def udp_send(ns: str, dst: str, port: int, count: int, size: int, src: Optional[str] = None,
             sport: int = 0) -> Sent:
    """``count`` datagrams of ``size`` payload bytes from namespace ``ns`` to
    (``dst``, ``port``), from ``src``/``sport`` if given; what was sent."""
    with socket_in(ns, family_of(dst), socket.SOCK_DGRAM) as s:
        if src is not None or sport:
            s.bind((src or ("::" if ":" in dst else "0.0.0.0"), sport))
        s.connect((dst, port))
        data = bytes((i * 7 + 3) & 0xFF for i in range(size))
        for _ in range(count):
            s.send(data)
        local = s.getsockname()[:2]
    return Sent("udp", (local[0], local[1]), (dst, port), count * size, count)


def tcp_send(ns: str, dst: str, port: int, payload: int, chunk: int = 65536) -> Sent:
    """One TCP connection from namespace ``ns`` to (``dst``, ``port``) that
    writes ``payload`` bytes and closes; what was sent. Something must listen
    (e.g. ``TcpSink``)."""
    with socket_in(ns, family_of(dst), socket.SOCK_STREAM) as s:
        s.settimeout(TIMEOUT_S)
        s.connect((dst, port))
        local = s.getsockname()[:2]
        block = b"t" * min(chunk, max(payload, 1))
        left = payload
        writes = 0
        while left:
            left -= s.send(block[: min(left, len(block))])
            writes += 1
        s.shutdown(socket.SHUT_WR)
        s.recv(1)  # until the peer closed: every byte was taken
    return Sent("tcp", (local[0], local[1]), (dst, port), payload, writes)


class TcpSink(_Sink):
    """A TCP listener in namespace ``ns`` on ``address`` that reads every
    connection to its end and closes it; ``received`` bytes and
    ``connections`` so far."""

    def __init__(self, ns: str, address: str, port: int = 0):
        super().__init__(ns, address, port, socket.SOCK_STREAM)
        self.connections = 0
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(TIMEOUT_S)
                self.connections += 1
                try:
                    while chunk := conn.recv(65536):
                        self.received += len(chunk)
                except OSError:
                    pass


def tcp_exchange(ns_a: str, ns_b: str, family: int, addr_b: str, count: int, size_ab: int,
                 size_ba: int) -> tuple[int, int]:
    """A sends ``count`` messages of ``size_ab`` bytes, B answers each with
    ``size_ba``. Returns (bytes A sent, bytes A received), as the sockets saw them."""
    srv = socket_in(ns_b, family, socket.SOCK_STREAM)
    srv.bind((addr_b, 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    err: list[BaseException] = []

    def serve() -> None:
        try:
            conn, _ = srv.accept()
            with conn:
                for _ in range(count):
                    _recv_exact(conn, size_ab)
                    conn.sendall(b"b" * size_ba)
        except BaseException as e:
            err.append(e)

    t = threading.Thread(target=serve)
    t.start()
    cli = socket_in(ns_a, family, socket.SOCK_STREAM)
    sent = got = 0
    with cli:
        cli.connect((addr_b, port))
        for _ in range(count):
            cli.sendall(b"a" * size_ab)
            sent += size_ab
            got += len(_recv_exact(cli, size_ba))
    t.join(10)
    srv.close()
    if err:
        raise err[0]
    return sent, got


def _recv_exact(s: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("peer closed early")
        buf += chunk
    return bytes(buf)


def udp_exchange(ns_a: str, ns_b: str, family: int, addr_a: str, addr_b: str, count_ab: int, size_ab: int,
                 count_ba: int, size_ba: int) -> tuple[int, int]:
    """UDP both ways; every datagram is received before this returns."""
    a = socket_in(ns_a, family, socket.SOCK_DGRAM)
    b = socket_in(ns_b, family, socket.SOCK_DGRAM)
    with a, b:
        a.bind((addr_a, 0))
        b.bind((addr_b, 0))
        a.settimeout(5)
        b.settimeout(5)
        got_a = got_b = 0
        for _ in range(count_ab):
            a.sendto(b"u" * size_ab, b.getsockname()[:2])
            got_b += len(b.recv(65535))
        for _ in range(count_ba):
            b.sendto(b"v" * size_ba, a.getsockname()[:2])
            got_a += len(a.recv(65535))
    assert got_b == count_ab * size_ab
    return count_ab * size_ab, got_a


def bulk_send(ns_a: str, ns_b: str, addr_b: str, total: int, before_close: Callable[[socket.socket], Any]) -> Any:
    """A sends ``total`` bytes to B over IPv4 TCP; ``before_close(sock)`` runs after
    B has read everything and before the socket closes. Returns its result."""
    srv = socket_in(ns_b, socket.AF_INET, socket.SOCK_STREAM)
    srv.bind((addr_b, 0))
    srv.listen(1)
    done = threading.Event()

    def serve() -> None:
        conn, _ = srv.accept()
        with conn:
            _recv_exact(conn, total)
            done.set()
            conn.recv(1)  # until A closes

    t = threading.Thread(target=serve)
    t.start()
    cli = socket_in(ns_a, socket.AF_INET, socket.SOCK_STREAM)
    with cli:
        cli.connect(srv.getsockname())
        chunk = b"x" * 65536
        left = total
        while left:
            n = cli.send(chunk[: min(left, len(chunk))])
            left -= n
        done.wait(10)
        result = before_close(cli)
    t.join(10)
    srv.close()
    return result


def udp_to_ports(ns: str, dst: str, ports: range, size: int) -> Sent:
    """One datagram of ``size`` bytes to each of ``ports`` on ``dst``, from
    one socket in namespace ``ns``: as many flows as ports."""
    with socket_in(ns, family_of(dst), socket.SOCK_DGRAM) as s:
        for port in ports:
            s.sendto(b"x" * size, (dst, port))
        local = s.getsockname()[:2]
    return Sent("udp", (local[0], local[1]), (dst, ports.start), len(ports) * size, len(ports))


# A sender of its own process (raw IPv4 UDP, checksum 0): as fast as Python
# goes, each datagram from the next of ``flows`` source ports in turn.
_ROUND_ROBIN = r"""
import socket, struct, sys, time
src, dst, n, seconds, dport = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
payload = b"x" * 64
pkts = []
for i in range(n):
    sport = 20000 + i
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))
    pkts.append(ip + udp)
end = time.monotonic() + seconds
sent = 0
addr = (dst, 0)
send = s.sendto
while True:
    for p in pkts:
        send(p, addr)
    sent += n
    if time.monotonic() >= end:
        break
print(sent)
"""


def round_robin_udp(ns: str, src: str, dst: str, flows: int, seconds: float, dport: int = 9) -> int:
    """IPv4 UDP datagrams of 64 payload bytes from ``flows`` source ports
    (20000 on) in turn, from ``src`` in namespace ``ns`` to (``dst``,
    ``dport``), for ``seconds``, in a process of its own; how many were sent."""
    if not 1 <= flows <= 45000 or not 0 < seconds <= 600:
        raise ValueError("round_robin_udp: 1 to 45,000 flows, for at most 600 s")
    r = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", _ROUND_ROBIN, src, dst, str(flows),
                        str(seconds), str(dport)], capture_output=True, text=True, timeout=seconds + 60)
    if r.returncode != 0:
        raise RuntimeError(f"round_robin_udp: the sender failed: {r.stderr.strip()[-500:]}")
    return int(r.stdout.split()[-1])
