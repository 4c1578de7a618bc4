"""`tcflow demo`: two throwaway namespaces joined by a veth, tcflow attached to
one end, a few seconds of mixed traffic, the counters, and a full clean-up.

Only docs/SPEC.md's test addresses (198.18.0.0/15, 2001:db8::/32), no default
route (tcflow/sandbox.py).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from typing import Callable

from .exporters.table import render
from .monitor import Monitor
from .netns import resolve, run_in
from .sandbox import Sandbox, VethPair


def _traffic(p: VethPair, seconds: float) -> None:
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


def run(seconds: float = 3.0, ingress: str = "tc", out: Callable[[str], None] = print) -> int:
    if os.geteuid() != 0:
        print("tcflow: error: the demo creates namespaces and loads BPF: run it with sudo", file=sys.stderr)
        return 1
    with Sandbox("tcflow-demo-") as box:
        p = box.pair(dev_a="veth-a", dev_b="veth-b")
        out(f"tcflow demo: namespaces {p.ns_a} and {p.ns_b}, veth-a <-> veth-b; "
            f"tcflow attached to veth-a (recv on {ingress}); {seconds:g} s of TCP, UDP and ICMP\n")
        with Monitor([p.dev_a], netns=p.ns_a, ingress=ingress) as m:
            first = m.snapshot()
            _traffic(p, seconds)
            out(render(m.snapshot(), first))
        out("\ntcflow demo: detached; removing the namespaces")
    return 0
