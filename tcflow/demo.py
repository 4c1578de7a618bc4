"""`tcflow demo`: two throwaway namespaces joined by a veth, tcflow attached to
one end, a few seconds of mixed traffic, the counters, and a full clean-up.

Only SPEC's test addresses (198.18.0.0/15, 2001:db8::/32), no default route.
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


def _sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


def _traffic(ns_a: str, ns_b: str, seconds: float) -> None:
    a, b = resolve(ns_a).path, resolve(ns_b).path
    end = time.monotonic() + seconds
    pairs = [(socket.AF_INET, "198.18.0.1", "198.18.0.2"), (socket.AF_INET6, "2001:db8::1", "2001:db8::2")]
    for fam, _src, dst in pairs:
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
    subprocess.run(["ip", "netns", "exec", ns_a, "ping", "-c", "3", "-i", "0.2", "198.18.0.2"],
                   capture_output=True)


def run(seconds: float = 3.0, ingress: str = "tc") -> int:
    if os.geteuid() != 0:
        print("tcflow: error: the demo creates namespaces and loads BPF: run it with sudo", file=sys.stderr)
        return 1
    tag = f"{os.getpid() % 100000}"
    ns_a, ns_b = f"tcflow-demo-a{tag}", f"tcflow-demo-b{tag}"
    try:
        _sh("ip", "netns", "add", ns_a)
        _sh("ip", "netns", "add", ns_b)
        _sh("ip", "link", "add", "veth-a", "netns", ns_a, "type", "veth", "peer", "name", "veth-b", "netns", ns_b)
        for ns, dev, v4, v6 in ((ns_a, "veth-a", "198.18.0.1", "2001:db8::1"),
                                (ns_b, "veth-b", "198.18.0.2", "2001:db8::2")):
            _sh("ip", "-n", ns, "addr", "add", f"{v4}/24", "dev", dev)
            _sh("ip", "-n", ns, "addr", "add", f"{v6}/64", "dev", dev, "nodad")
            _sh("ip", "-n", ns, "link", "set", dev, "up")
        print(f"tcflow demo: namespaces {ns_a} and {ns_b}, veth-a <-> veth-b; "
              f"tcflow attached to veth-a (recv on {ingress}); {seconds:g} s of TCP, UDP and ICMP\n")
        with Monitor(["veth-a"], netns=ns_a, ingress=ingress) as m:
            first = m.snapshot()
            _traffic(ns_a, ns_b, seconds)
            print(render(m.snapshot(), first))
        print("\ntcflow demo: detached; removing the namespaces")
        return 0
    finally:
        for ns in (ns_a, ns_b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
