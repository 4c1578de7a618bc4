"""Real socket traffic between two namespaces, with exact byte tallies."""

from __future__ import annotations

import socket
import threading
from typing import Any, Callable

from tcflow.system.netns import resolve, run_in


def _sock(ns: str, family: int, kind: int) -> socket.socket:
    return run_in(resolve(ns).path, lambda: socket.socket(family, kind))


def tcp_exchange(ns_a: str, ns_b: str, family: int, addr_b: str, count: int, size_ab: int,
                 size_ba: int) -> tuple[int, int]:
    """A sends ``count`` messages of ``size_ab`` bytes, B answers each with
    ``size_ba``. Returns (bytes A sent, bytes A received), as the sockets saw them."""
    srv = _sock(ns_b, family, socket.SOCK_STREAM)
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
    cli = _sock(ns_a, family, socket.SOCK_STREAM)
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
    a = _sock(ns_a, family, socket.SOCK_DGRAM)
    b = _sock(ns_b, family, socket.SOCK_DGRAM)
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
    srv = _sock(ns_b, socket.AF_INET, socket.SOCK_STREAM)
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
    cli = _sock(ns_a, socket.AF_INET, socket.SOCK_STREAM)
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
