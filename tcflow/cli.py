"""tcflow's command line. main(argv) -> exit status; the work lives elsewhere.

Every failure the user can fix is a TcflowError, printed as one line
``tcflow: error: ...`` with the fix; anything else is a bug, printed as one
line too unless --debug asks for the traceback.
"""

from __future__ import annotations

import argparse
import enum
import json
import os
import select
import signal
import sys
import time
from typing import Any, Optional, Sequence

from .counters import Snapshot
from .errors import InterfaceError, TcflowError


class Exit(enum.IntEnum):
    OK = 0
    ERROR = 1
    USAGE = 2
    INTERRUPTED = 130


EPILOG = """examples:
  sudo tcflow demo                              counters on throwaway namespaces
  sudo tcflow attach eth1                       live table for eth1
  sudo tcflow attach --netns ns1 veth0 --json --count 5
  sudo tcflow attach --pid 4242 eth0            a container's eth0
  sudo tcflow attach --match 'veth*' --follow   every veth, also ones made later
  sudo tcflow attach --pin eth1                 keep counting after tcflow exits
  sudo tcflow show                              read what --pin left counting
  sudo tcflow status                            what tcflow has attached, where
  sudo tcflow detach --all                      remove all of it
  sudo tcflow doctor                            check this machine

recv is counted by native XDP on physical NICs and by clsact ingress on
virtual devices (veth, bridge...), where native XDP costs throughput;
--ingress xdp|tc overrides that. send is always clsact egress.
"""

ATTACH_EPILOG = """examples:
  sudo tcflow attach eth1
  sudo tcflow attach --netns ns1 veth0 --json --count 5 --interval 0.5
  sudo tcflow attach --pid "$(docker inspect -f '{{.State.Pid}}' web)" eth0
  sudo tcflow attach --match 'veth*' --follow --json
  sudo tcflow attach --pin --ingress tc eth1 eth2

The first snapshot (all zeros) is printed as soon as the programs are
attached. SIGINT or SIGTERM prints a last snapshot, detaches (unless --pin)
and exits 0. --json prints one object per line:
  {"time": ..., "interfaces": {"NETNS/IFACE": {"bytes": {CLASS: n, ...},
   "packets": {...}, "hook": {"ingress": ..., "xdp_mode": ..., ...}}}}
with every class name as a key, cumulative since attach.
"""


def snapshot_json(snap: Snapshot) -> str:
    return json.dumps({"time": round(snap.time, 6), "interfaces": {
        key: {"bytes": dict(ic.bytes), "packets": dict(ic.packets), "hook": dict(ic.hooks)}
        for key, ic in snap.interfaces.items()}}, sort_keys=False)


def note(text: str) -> None:
    print(f"tcflow: {text}", file=sys.stderr, flush=True)


class _Signals:
    """SIGINT/SIGTERM/SIGHUP: raise while attaching, then just wake the loop."""

    def __init__(self) -> None:
        self.stop = False
        self.looping = False
        self.rfd, self.wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.saved: dict[int, Any] = {}

    def __enter__(self) -> "_Signals":
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            self.saved[sig] = signal.signal(sig, self._on)
        self.saved_wakeup = signal.set_wakeup_fd(self.wfd)
        return self

    def _on(self, signum: int, frame: object) -> None:
        self.stop = True
        if not self.looping:
            raise KeyboardInterrupt

    def __exit__(self, *exc: Any) -> None:
        signal.set_wakeup_fd(self.saved_wakeup)
        for sig, h in self.saved.items():
            signal.signal(sig, h)
        os.close(self.rfd)
        os.close(self.wfd)


def _monitor_from(args: argparse.Namespace) -> Any:
    from .loader import Options
    from .monitor import Monitor

    if args.interval <= 0:
        raise InterfaceError("--interval must be more than 0 seconds", hint="e.g. --interval 0.5")
    return Monitor(args.interfaces, netns=args.netns, pid=args.pid, ingress=args.ingress, xdp_mode=args.xdp_mode,
                   include_local=args.include_local, match=args.match or (), follow=args.follow,
                   pin=args.pin, pin_dir=args.pin_dir, options=Options(max_ifaces=args.max_interfaces))


def cmd_attach(args: argparse.Namespace) -> int:
    from .doctor import require_root
    from .exporters.table import header, render

    if args.xdp_mode != "auto" and args.ingress == "auto":
        args.ingress = "xdp"  # asking for an XDP mode means asking for XDP
    m = _monitor_from(args)
    require_root()
    live = not args.json and sys.stdout.isatty()
    with _Signals() as sig:
        m.attach()
        try:
            return _attach_loop(args, m, sig, live, header, render)
        finally:
            pinned = m.pin
            m.close()
            if pinned and m.dp is not None:
                note(f"left attached; counters stay pinned under {m.pin_dir}: "
                     "`tcflow show` reads them, `tcflow detach --all` removes them")


def _attach_loop(args: argparse.Namespace, m: Any, sig: _Signals, live: bool, header: Any, render: Any) -> int:
    def flush_notices() -> None:
        for text in m.notices:
            note(text)
        m.notices.clear()

    def emit(snap: Snapshot, prev: Optional[Snapshot]) -> None:
        if args.json:
            print(snapshot_json(snap), flush=True)
        elif live:
            sys.stdout.write("\x1b[H\x1b[2J" + header(snap, args.interval) + "\n\n" + render(snap, prev) + "\n")
            sys.stdout.flush()
        else:
            print(render(snap, prev) + "\n", flush=True)

    flush_notices()
    if not args.json and not live:
        names = ", ".join(ln.ifname for ln in m.links) or "nothing yet"
        note(f"attached to {names}; Ctrl-C to stop")
    sig.looping = True
    events = m.events_fd()
    prev = m.snapshot()
    emit(prev, None)
    n = 1
    due = time.monotonic() + args.interval
    while not sig.stop and not (args.count and n >= args.count):
        timeout = max(0.0, due - time.monotonic())
        ready, _, _ = select.select([sig.rfd, events], [], [], timeout)
        if sig.rfd in ready:
            try:
                os.read(sig.rfd, 512)
            except BlockingIOError:
                pass
        if events in ready:
            m.drain_events()
            m.sync()
            flush_notices()
        if sig.stop:
            break
        if not m.namespace_alive():
            emit(m.snapshot(), prev)
            raise InterfaceError("the network namespace was deleted", netns=m.ns.name,
                                 hint="tcflow detached and let it go; attach again in a new namespace")
        if not m.links and not args.follow:
            raise InterfaceError("every attached interface is gone", hint="attach again, or use --match "
                                 "with --follow to wait for interfaces to appear")
        if time.monotonic() >= due:
            snap = m.snapshot()
            emit(snap, prev)
            prev, n = snap, n + 1
            due += args.interval
            if due < time.monotonic():  # fell behind (suspended?): do not burst
                due = time.monotonic() + args.interval
    if sig.stop:
        emit(m.snapshot(), prev)  # the last word on SIGINT/SIGTERM
    return Exit.OK


def parse_listen(text: str) -> tuple[str, int]:
    """HOST:PORT, [IPV6]:PORT -> (host, port)."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InterfaceError(f"--listen {text!r} is not HOST:PORT", hint="e.g. --listen 127.0.0.1:8080")
    return host, int(port)


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def cmd_serve(args: argparse.Namespace) -> int:
    from . import _libbpf
    from .doctor import require_root
    from .exporters.http import Source, make_server

    host, port = parse_listen(args.listen)
    if args.xdp_mode != "auto" and args.ingress == "auto":
        args.ingress = "xdp"
    args.interval = 1.0
    m = _monitor_from(args)
    require_root()
    try:
        server = make_server(host, port, Source(lambda: m.snapshot(), lambda: m.dp.program_stats()))
    except OSError as e:
        raise InterfaceError(f"cannot listen on {host}:{port}: {e.strerror}",
                             hint="choose another port with --listen HOST:PORT") from None
    stats_fd = -1
    serving = False
    with _Signals() as sig:
        try:
            m.attach()
            try:
                stats_fd = _libbpf.enable_stats()
            except TcflowError as e:
                note(f"BPF run-time statistics unavailable ({e}); /metrics leaves out tcflow's own cost")
            for text in m.notices:
                note(text)
            m.notices.clear()
            import threading

            thread = threading.Thread(target=server.serve_forever, name="tcflow-http", daemon=True)
            thread.start()
            serving = True
            shown = f"[{host}]" if ":" in host else host
            if not _is_loopback(host):
                note(f"listening on {shown}:{port}, reachable from other hosts (read-only endpoints)")
            names = ", ".join(ln.ifname for ln in m.links) or "nothing yet"
            note(f"attached to {names}; serving http://{shown}:{port}/ (/traffic, /metrics, /healthz); "
                 "Ctrl-C stops")
            sig.looping = True
            events = m.events_fd()
            while not sig.stop:
                ready, _, _ = select.select([sig.rfd, events], [], [], 1.0)
                if events in ready:
                    with server.source.lock:
                        m.drain_events()
                        m.sync()
                    for text in m.notices:
                        note(text)
                    m.notices.clear()
                if not m.namespace_alive():
                    raise InterfaceError("the network namespace was deleted", netns=m.ns.name,
                                         hint="tcflow detached and let it go")
            return Exit.OK
        finally:
            if serving:
                server.shutdown()
            server.server_close()
            if stats_fd >= 0:
                os.close(stats_fd)  # the kernel goes back to its previous setting
            m.close()
            if m.pin and serving:
                note(f"left attached; counters stay pinned under {m.pin_dir}")


def _pinned_snapshot(pin_dir: str) -> Snapshot:
    from .counters import make_snapshot
    from .pins import Store

    with Store(pin_dir) as store:
        entries = store.entries()
        sums = store.counters([e.slot for e in entries])
    return make_snapshot((e.ifname, e.netns, e.ifindex, e.hooks, *sums[e.slot]) for e in entries)


def cmd_show(args: argparse.Namespace) -> int:
    from .exporters.table import render

    snap = _pinned_snapshot(args.pin_dir)
    print(snapshot_json(snap) if args.json else render(snap))
    return Exit.OK


def cmd_status(args: argparse.Namespace) -> int:
    from .status import collect, render_status

    report = collect(args.pin_dir)
    print(json.dumps(report, indent=1) if args.json else render_status(report))
    return Exit.OK


def cmd_detach(args: argparse.Namespace) -> int:
    from .doctor import require_root
    from .status import detach_all, detach_named

    if bool(args.all) == bool(args.interfaces):
        raise InterfaceError("name the interfaces to detach, or give --all",
                             hint="e.g. `tcflow detach eth1` or `tcflow detach --all`")
    require_root()
    lines = detach_all(args.pin_dir) if args.all else detach_named(args.interfaces, args.netns, args.pid,
                                                                   args.pin_dir)
    for line in lines:
        print(line)
    return Exit.OK


def cmd_doctor(args: argparse.Namespace) -> int:
    from .doctor import report, run_checks

    text, ok = report(run_checks())
    print(text)
    return Exit.OK if ok else Exit.ERROR


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run

    return run(seconds=args.seconds, ingress=args.ingress)


def _add_where(p: argparse.ArgumentParser) -> None:
    p.add_argument("--netns", metavar="NAME", help="interfaces are in this network namespace "
                   "(an `ip netns` name, or a path such as /proc/PID/ns/net)")
    p.add_argument("--pid", type=int, help="interfaces are in this process's network namespace (a container)")


def _add_pin_dir(p: argparse.ArgumentParser) -> None:
    from .pins import default_pin_dir

    p.add_argument("--pin-dir", default=default_pin_dir(), metavar="DIR",
                   help="bpffs directory of the pins (default $TCFLOW_PIN_DIR or /sys/fs/bpf/tcflow)")


def parser() -> argparse.ArgumentParser:
    from . import __version__
    from .loader import DEFAULT_MAX_IFACES

    fmt = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(prog="tcflow", description="Per-interface traffic counters from XDP/TC eBPF.",
                                epilog=EPILOG, formatter_class=fmt)
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("--version", action="version", version=f"tcflow {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    a = sub.add_parser("attach", help="attach and print counters (live table or JSON lines)",
                       description="Attach tcflow's programs and print the counters every interval.",
                       epilog=ATTACH_EPILOG, formatter_class=fmt)
    a.add_argument("interfaces", nargs="*", metavar="IFACE", help="interfaces to attach to")
    _add_where(a)
    a.add_argument("--match", action="append", metavar="GLOB",
                   help="also every interface whose name matches (repeatable; lo only when named)")
    a.add_argument("--follow", action="store_true",
                   help="with --match: attach to matching interfaces that appear later; drop ones that go")
    a.add_argument("--ingress", choices=["auto", "xdp", "tc"], default="auto",
                   help="recv hook: auto (default: native XDP on physical NICs, clsact on virtual devices "
                        "and where native XDP is refused), xdp or tc")
    a.add_argument("--xdp-mode", choices=["auto", "native", "generic"], default="auto",
                   help="with --ingress xdp: auto (native, else generic), native or generic")
    a.add_argument("--interval", type=float, default=1.0, metavar="SECONDS", help="between snapshots (default 1)")
    a.add_argument("--count", type=int, default=0, metavar="N", help="stop after N snapshots")
    a.add_argument("--json", action="store_true", help="one JSON object per snapshot per line")
    a.add_argument("--include-local", action="store_true",
                   help="count loopback and src == dst traffic in the classes too")
    a.add_argument("--pin", action="store_true", help="pin the counters and leave the programs attached on exit")
    _add_pin_dir(a)
    a.add_argument("--max-interfaces", type=int, default=DEFAULT_MAX_IFACES, metavar="N",
                   help=f"size of the interface maps (default {DEFAULT_MAX_IFACES})")
    a.set_defaults(func=cmd_attach)

    sv = sub.add_parser("serve", help="attach, and serve /traffic (JSON), /metrics (Prometheus) and a dashboard",
                        description="Attach like `attach`, then serve the counters over HTTP until stopped.",
                        epilog="examples:\n  sudo tcflow serve eth1\n"
                               "  sudo tcflow serve --pin --match 'veth*' --follow --listen 127.0.0.1:9462\n"
                               "  curl -s localhost:8080/traffic | jq .\n  curl -s localhost:8080/metrics\n\n"
                               "Binds 127.0.0.1:8080 unless --listen says otherwise. Endpoints are read-only:\n"
                               "GET/HEAD /, /traffic, /metrics, /healthz; other paths 404, other methods 405.",
                        formatter_class=fmt)
    sv.add_argument("interfaces", nargs="*", metavar="IFACE")
    _add_where(sv)
    sv.add_argument("--match", action="append", metavar="GLOB", help="also every interface whose name matches")
    sv.add_argument("--follow", action="store_true", help="with --match: take interfaces that appear later")
    sv.add_argument("--ingress", choices=["auto", "xdp", "tc"], default="auto", help="recv hook (as for attach)")
    sv.add_argument("--xdp-mode", choices=["auto", "native", "generic"], default="auto")
    sv.add_argument("--include-local", action="store_true")
    sv.add_argument("--pin", action="store_true", help="pin, adopt pinned programs, leave attached on exit")
    _add_pin_dir(sv)
    sv.add_argument("--max-interfaces", type=int, default=DEFAULT_MAX_IFACES, metavar="N")
    sv.add_argument("--listen", default="127.0.0.1:8080", metavar="HOST:PORT",
                    help="where to serve (default 127.0.0.1:8080; anything else must be asked for)")
    sv.set_defaults(func=cmd_serve)

    s = sub.add_parser("show", help="print the counters that --pin left running",
                       epilog="examples:\n  sudo tcflow show\n  sudo tcflow show --json | jq .",
                       formatter_class=fmt)
    s.add_argument("--json", action="store_true", help="one JSON object, as attach --json prints")
    _add_pin_dir(s)
    s.set_defaults(func=cmd_show)

    st = sub.add_parser("status", help="what tcflow has attached, where, and what else is on those hooks",
                        epilog="examples:\n  sudo tcflow status\n  sudo tcflow status --json", formatter_class=fmt)
    st.add_argument("--json", action="store_true")
    _add_pin_dir(st)
    st.set_defaults(func=cmd_status)

    d = sub.add_parser("detach", help="remove tcflow from interfaces (pinned or left by a killed tcflow)",
                       epilog="examples:\n  sudo tcflow detach eth1\n  sudo tcflow detach --netns ns1 veth0\n"
                              "  sudo tcflow detach --all          every pinned attachment, and the pins",
                       formatter_class=fmt)
    d.add_argument("interfaces", nargs="*", metavar="IFACE")
    d.add_argument("--all", action="store_true", help="every pinned attachment, then the pins themselves")
    _add_where(d)
    _add_pin_dir(d)
    d.set_defaults(func=cmd_detach)

    dr = sub.add_parser("doctor", help="check root, bpf(), bcc, kernel headers, clsact and XDP",
                        epilog="examples:\n  sudo tcflow doctor", formatter_class=fmt)
    dr.set_defaults(func=cmd_doctor)

    de = sub.add_parser("demo", help="self-contained demo in throwaway namespaces",
                        epilog="examples:\n  sudo tcflow demo\n  sudo tcflow demo --seconds 10 --ingress xdp",
                        formatter_class=fmt)
    de.add_argument("--seconds", type=float, default=3.0)
    de.add_argument("--ingress", choices=["xdp", "tc"], default="tc")
    de.set_defaults(func=cmd_demo)
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
    except Exception as e:  # a bug, or something tcflow did not foresee
        if args.debug:
            raise
        text = " ".join(str(e).split()) or type(e).__name__
        print(f"tcflow: error: {type(e).__name__}: {text} (run with --debug for the traceback, and please "
              "report it)", file=sys.stderr)
        return Exit.ERROR
