"""Traffic between the two ends of a veth pair the sandbox made: TCP, UDP
and ICMP over IPv4 and IPv6, for the demo. Bounded in time."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from typing import Callable

from tcflow.host.sandbox import VethPair
from tcflow.system.netns import resolve, run_in


def mixed(p: VethPair, seconds: float) -> None:
    a, b = resolve(p.ns_a).path, resolve(p.ns_b).path
    end = time.monotonic() + seconds
    for fam, dst in ((socket.AF_INET, p.ip4_b), (socket.AF_INET6, p.ip6_b)):
        def sock(kind: int, f: int = fam) -> Callable[[], socket.socket]:
            return lambda: socket.socket(f, kind)

        srv = run_in(b, sock(socket.SOCK_STREAM))
        srv.bind((dst, 0))
        srv.listen(1)

        def sink(s: socket.socket = srv) -> None:
            conn, _ = s.accept()
            with conn:
                while conn.recv(65536):
                    pass

        threading.Thread(target=sink, daemon=True).start()
        cli = run_in(a, sock(socket.SOCK_STREAM))
        cli.connect(srv.getsockname()[:2])
        usrc = run_in(a, sock(socket.SOCK_DGRAM))
        udst = run_in(b, sock(socket.SOCK_DGRAM))
        udst.bind((dst, 0))
        share = seconds / 2
        stop = time.monotonic() + share
        while time.monotonic() < min(stop, end):
            cli.sendall(b"t" * 65536)
            usrc.sendto(b"u" * 1000, udst.getsockname()[:2])
            time.sleep(0.001)
        for s in (cli, usrc, udst, srv):
            s.close()
    subprocess.run(["ip", "netns", "exec", p.ns_a, "ping", "-c", "3", "-i", "0.2", p.ip4_b], capture_output=True)
