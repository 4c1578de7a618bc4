"""`tcflow demo`: two throwaway namespaces joined by a veth, tcflow attached to
one end, a few seconds of mixed traffic, the counters, and a full clean-up.

Only docs/SPEC.md's test addresses (198.18.0.0/15, 2001:db8::/32), no default
route (tcflow/host/sandbox.py).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

from tcflow.engine.monitor import Monitor
from tcflow.host import traffic
from tcflow.host.sandbox import Sandbox
from tcflow.output.table import render


def demo(seconds: float = 3.0, ingress: str = "tc", out: Callable[[str], None] = print) -> int:
    if os.geteuid() != 0:
        print("tcflow: error: the demo creates namespaces and loads BPF: run it with sudo", file=sys.stderr)
        return 1
    with Sandbox("tcflow-demo-") as box:
        p = box.pair(dev_a="veth-a", dev_b="veth-b")
        out(f"tcflow demo: namespaces {p.ns_a} and {p.ns_b}, veth-a <-> veth-b; "
            f"tcflow attached to veth-a (recv on {ingress}); {seconds:g} s of TCP, UDP and ICMP\n")
        with Monitor([p.dev_a], netns=p.ns_a, ingress=ingress) as m:
            first = m.snapshot()
            traffic.mixed(p, seconds)
            out(render(m.snapshot(), first))
        out("\ntcflow demo: detached; removing the namespaces")
    return 0


def run(args: argparse.Namespace) -> int:
    from tcflow.cli.screen import out

    return demo(seconds=args.seconds, ingress=args.ingress, out=out)
