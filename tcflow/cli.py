"""tcflow's command line. main(argv) -> exit status; the work lives elsewhere."""

from __future__ import annotations

import argparse
import enum
import json
import signal
import sys
import time
from typing import Optional, Sequence

from .counters import Snapshot
from .errors import TcflowError


class Exit(enum.IntEnum):
    OK = 0
    ERROR = 1
    USAGE = 2
    INTERRUPTED = 130


EPILOG = """examples:
  sudo tcflow demo                        counters on throwaway namespaces
  sudo tcflow attach eth1                 live table for eth1
  sudo tcflow attach --netns ns1 veth0 --json --count 5
  sudo tcflow attach --ingress tc veth0   count recv on clsact, not XDP
"""


def snapshot_json(snap: Snapshot) -> str:
    return json.dumps({"time": snap.time, "interfaces": {
        key: {"bytes": dict(ic.bytes), "packets": dict(ic.packets), "hook": dict(ic.hooks)}
        for key, ic in snap.interfaces.items()}}, sort_keys=False)


def cmd_attach(args: argparse.Namespace) -> int:
    from .exporters.table import render
    from .monitor import Monitor

    stop = {"now": False}

    def on_signal(signum: int, frame: object) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, on_signal)
    with Monitor(args.interfaces, netns=args.netns, pid=args.pid, ingress=args.ingress,
                 xdp_mode=args.xdp_mode, include_local=args.include_local) as m:
        if not args.json:
            print(f"tcflow: attached to {', '.join(args.interfaces)}; Ctrl-C to stop", file=sys.stderr)
        prev: Optional[Snapshot] = None
        n = 0
        try:
            while True:
                snap = m.snapshot()
                print(snapshot_json(snap) if args.json else render(snap, prev) + "\n", flush=True)
                prev, n = snap, n + 1
                if (args.count and n >= args.count) or stop["now"]:
                    break
                time.sleep(args.interval)
                if stop["now"]:
                    print(snapshot_json(m.snapshot()) if args.json else render(m.snapshot(), prev), flush=True)
                    break
        except KeyboardInterrupt:
            print(snapshot_json(m.snapshot()) if args.json else render(m.snapshot(), prev), flush=True)
            return Exit.INTERRUPTED
    return Exit.OK


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run

    return run(seconds=args.seconds, ingress=args.ingress)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tcflow", description="Per-interface traffic counters from XDP/TC eBPF.",
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", required=True)
    a = sub.add_parser("attach", help="attach and print counters", epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    a.add_argument("interfaces", nargs="+", metavar="IFACE")
    a.add_argument("--netns", help="interfaces are in this network namespace (ip netns name or path)")
    a.add_argument("--pid", type=int, help="interfaces are in this process's network namespace")
    a.add_argument("--ingress", choices=["xdp", "tc"], default="xdp", help="recv hook (default xdp)")
    a.add_argument("--xdp-mode", choices=["auto", "native", "generic"], default="auto")
    a.add_argument("--interval", type=float, default=1.0, metavar="SECONDS")
    a.add_argument("--count", type=int, default=0, metavar="N", help="stop after N snapshots")
    a.add_argument("--json", action="store_true", help="one JSON object per snapshot per line")
    a.add_argument("--include-local", action="store_true", help="count loopback and src == dst traffic too")
    a.set_defaults(func=cmd_attach)
    d = sub.add_parser("demo", help="self-contained demo in throwaway namespaces")
    d.add_argument("--seconds", type=float, default=3.0)
    d.add_argument("--ingress", choices=["xdp", "tc"], default="tc")
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except TcflowError as e:
        if args.debug:
            raise
        print(f"tcflow: error: {e}", file=sys.stderr)
        return Exit.ERROR
    except KeyboardInterrupt:
        return Exit.INTERRUPTED
