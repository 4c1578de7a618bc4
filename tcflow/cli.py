"""tcflow's command line. main(argv) -> exit status; the work lives elsewhere.

Every failure the user can fix is a TcflowError, printed as one line
``tcflow: error: ...`` with the fix (exit 1; 2 for a usage error); anything
else is a bug, printed as one line too unless --debug asks for the traceback.

Each command imports its heavier parts (the HTTP server and prometheus_client,
the table, the doctor) when it runs, so that `--help`, `status` and `show`
start quickly; none of those imports would cycle.
"""

from __future__ import annotations

import argparse
import enum
import json
import math
import os
import select
import shutil
import signal
import sys
import threading
import time
from typing import Any, Callable, ContextManager, NoReturn, Optional, Sequence

from . import __version__, _libbpf, pins
from .agent import Agent
from .binding import INGRESS_CHOICES, XDP_MODES, Settings
from .completion import bash, subcommands
from .errors import InterfaceError, TcflowError, UsageError, shell_words
from .fleet import BURST_EVERY_S, BURST_S
from .flows import DEFAULT_TOP, IDLE_S
from .loader import DEFAULT_FLOW_ENTRIES, DEFAULT_MAX_IFACES, Options
from .names import printable
from .reader import VALUE_SIZE
from .snapshot import Snapshot, document
from .targets import Where, group

MAX_INTERFACES_LIMIT = 65536
CONTAINER_SCAN_S = 0.25  # --containers: how often /proc is scanned for new containers
MIN_FLOW_ENTRIES, MAX_FLOW_ENTRIES = 16, 1 << 20
MAX_TOP = 1000
MAX_METRICS_TOP = 50
FLOW_TICK_S = 1.0  # --flows: rates and eviction, once a second
MAX_COUNTERS_MIB = 1024  # the per-CPU counters map; the default 4096 interfaces take 1.6 MiB per CPU


class Exit(enum.IntEnum):
    OK = 0
    ERROR = 1
    USAGE = 2
    INTERRUPTED = 130


EPILOG = """examples:
  sudo tcflow demo                              counters on throwaway namespaces
  sudo tcflow attach eth1                       live table for eth1
  sudo tcflow attach ns1/veth0 ns2/veth0 --json --count 5
  sudo tcflow attach pid:4242/eth0              a container's eth0
  sudo tcflow attach --containers               every container, by name
  sudo tcflow top eth1                          the busiest flows (five-tuples), like iftop
  sudo tcflow attach --match 'veth*' --follow   every veth, also ones brought up later
  sudo tcflow attach --pin eth1                 keep counting after tcflow exits
  sudo tcflow show                              read what --pin left counting
  sudo tcflow status                            what tcflow has attached, where
  sudo tcflow detach --all                      remove all of it
  sudo tcflow doctor                            check this machine

An interface is IFACE (in tcflow's namespace, or the one --netns/--pid
names) or NETNS/IFACE: an `ip netns` name or pid:N, then the interface. One
process serves any number of namespaces with one compile.

recv is counted by native XDP on physical NICs and by clsact ingress on
virtual devices (veth, bridge...), where native XDP costs throughput;
--ingress xdp|tc overrides that. send is always clsact egress.
"""

ATTACH_EPILOG = """examples:
  sudo tcflow attach eth1
  sudo tcflow attach ns1/veth0 ns2/veth0 --json --count 5 --interval 0.5
  sudo tcflow attach --netns ns1 veth0 veth1
  sudo tcflow attach --pid 4242 eth0
  sudo tcflow attach --match 'veth*' --follow --json
  sudo tcflow attach --containers --json
  sudo tcflow attach --pin --ingress tc eth1 eth2
  sudo tcflow attach --flows --json eth1        with each interface's busiest flows

The first snapshot (all zeros) is printed as soon as the programs are
attached. SIGINT or SIGTERM prints a last snapshot, detaches (unless --pin)
and exits 0. --json prints one object per line, the same document as
`tcflow show --json` and GET /traffic:
  {"time": ..., "interfaces": {"NETNS/IFACE": {"bytes": {CLASS: n, ...},
   "packets": {...}, "hook": {"ingress": ..., "xdp_mode": ..., "pinned": false}, ...}}}
with every class name as a key, cumulative since attach.
"""

SERVE_EPILOG = """examples:
  sudo tcflow serve eth1
  sudo tcflow serve ns1/veth0 ns2/veth0
  sudo tcflow serve --pin --match 'veth*' --follow --listen 127.0.0.1:9462
  sudo tcflow serve --containers --pin --listen 127.0.0.1:9462
  sudo tcflow serve --flows --metrics-top-flows 5 eth1
  curl -s localhost:8080/traffic
  curl -s localhost:8080/metrics

Binds 127.0.0.1:8080 unless --listen says otherwise. Endpoints are read-only:
GET/HEAD /, /traffic, /metrics, /history, /classes, /healthz; other paths
404, other methods 405.
"""


def note(text: str) -> None:
    print(f"tcflow: {printable(text)}", file=sys.stderr, flush=True)


class OutputClosed(Exception):
    """Whoever read standard output has gone (`| head -1`): stop, quietly."""


def out(text: str, end: str = "\n") -> None:
    """Write to standard output. A closed pipe ends tcflow quietly (after its
    clean-up); any other failure to write is a one-line error."""
    try:
        sys.stdout.write(text + end)
        sys.stdout.flush()
    except BrokenPipeError:
        raise OutputClosed from None
    except OSError as e:
        raise TcflowError(f"cannot write to standard output: {e.strerror}",
                          hint="check where the output goes (a full disk?)") from None


# -- argument types: a bad value is a usage error (exit 2) ---------------------
def positive_seconds(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = math.nan
    if not math.isfinite(v) or v <= 0 or v > 86400:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds between 0 and 86400 (e.g. 0.5)")
    return v


def count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 0 (0: no limit)")
    return int(text)


def pin_dir(text: str) -> str:
    try:
        return pins.check_name(text)
    except UsageError as e:
        raise argparse.ArgumentTypeError(e.render()) from None


def namespace_name(text: str) -> str:
    if not text or "\0" in text:
        raise argparse.ArgumentTypeError("an empty namespace name: give an `ip netns` name or a path such as "
                                         "/proc/PID/ns/net, or leave --netns out")
    return text


def flow_entries(text: str) -> int:
    n = count(text)
    if not MIN_FLOW_ENTRIES <= n <= MAX_FLOW_ENTRIES:
        raise argparse.ArgumentTypeError(f"{text} is not between {MIN_FLOW_ENTRIES} and {MAX_FLOW_ENTRIES}")
    return n


def top_count(text: str) -> int:
    n = count(text)
    if n > MAX_TOP:
        raise argparse.ArgumentTypeError(f"{text} is more than {MAX_TOP}")
    return n


def metrics_top(text: str) -> int:
    n = count(text)
    if n > MAX_METRICS_TOP:
        raise argparse.ArgumentTypeError(f"{text} is more than {MAX_METRICS_TOP} (one series per flow and direction)")
    return n


def max_interfaces(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= MAX_INTERFACES_LIMIT:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number from 1 to {MAX_INTERFACES_LIMIT}")
    return int(text)


class _Signals:
    """SIGINT/SIGTERM/SIGHUP: raise while attaching, then just wake the loop."""

    def __init__(self) -> None:
        self.stop = False
        self.looping = False
        self.rfd, self.wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.saved: dict[int, Any] = {}

    def __enter__(self) -> "_Signals":
        self.pid = os.getpid()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            self.saved[sig] = signal.signal(sig, self._on)
        self.saved_wakeup = signal.set_wakeup_fd(self.wfd)
        return self

    def _on(self, signum: int, frame: object) -> None:
        if os.getpid() != self.pid:
            # a forked child (a library's helper process) inherited this
            # handler: it must die as by default, never unwind into tcflow
            os._exit(128 + signum)
        self.stop = True
        if not self.looping:
            raise KeyboardInterrupt

    def drain(self) -> None:
        try:
            os.read(self.rfd, 512)
        except BlockingIOError:
            pass

    def __exit__(self, *exc: Any) -> None:
        signal.set_wakeup_fd(self.saved_wakeup)
        for sig, h in self.saved.items():
            signal.signal(sig, h)
        os.close(self.rfd)
        os.close(self.wfd)


# -- attach and serve: one agent, one loop ---------------------------------------
def make_agent(args: argparse.Namespace) -> tuple[Agent, list[Any]]:
    ingress = args.ingress
    if args.xdp_mode != "auto" and ingress == "auto":
        ingress = "xdp"  # asking for an XDP mode means asking for XDP
    targets = []
    if args.interfaces or args.match or args.follow or not args.containers:
        targets = group(args.interfaces, args.match or (), args.follow, Where(args.netns, args.pid))
    settings = Settings(ingress, args.xdp_mode, args.include_local, args.pin, args.containers)
    counters_mib = args.max_interfaces * VALUE_SIZE * _libbpf.num_possible_cpus() / 2**20
    if counters_mib > MAX_COUNTERS_MIB:  # per-CPU: the same N costs 128 times more on a 256-CPU host
        raise UsageError(f"--max-interfaces {args.max_interfaces} needs {counters_mib:,.0f} MiB of counters on "
                         f"this machine's {_libbpf.num_possible_cpus()} CPUs (at most {MAX_COUNTERS_MIB} MiB)",
                         hint="ask for fewer interfaces")
    flows = bool(getattr(args, "flows", False)) or args.command == "top"
    if flows and args.pin:
        raise UsageError("--flows (and top) cannot be combined with --pin: flow tables are not pinned",
                         hint="drop --pin, or count flows in a second tcflow without it")
    agent = Agent(settings, Options(args.max_interfaces, args.pin_dir if args.pin else None, flows,
                                    args.flow_entries))
    agent.flows_top = args.flows_top
    agent.flow_idle = args.flow_idle
    return agent, targets


def flush_notices(agent: Agent, sink: Callable[[str], None] = note) -> None:
    for text in agent.notices:
        sink(text)
    agent.notices.clear()


def run_loop(agent: Agent, sig: _Signals, interval: float, tick: Callable[[], bool],
             guard: Callable[[], ContextManager[Any]], sink: Callable[[str], None] = note) -> None:
    """Until a signal (or ``tick`` returns False): follow link changes in every
    namespace, let go of deleted namespaces, call ``tick`` every ``interval``.
    ``guard`` is held while the agent changes (readers take it too)."""
    following = agent.fleet is not None or any(w.follow for w in agent.watches.values())
    due = time.monotonic() + interval
    scan_due = time.monotonic() + CONTAINER_SCAN_S
    flows_due = time.monotonic() + FLOW_TICK_S if agent.flows is not None else math.inf
    burst_until = 0.0  # --containers: after a runtime made a namespace, scan often for a while
    cue = agent.fleet.cue.fd if agent.fleet is not None and agent.fleet.cue.fd >= 0 else None
    while not sig.stop:
        fds = agent.event_fds()
        wake = min(due, scan_due if agent.fleet is not None else due, flows_due)
        ready, _, _ = select.select([sig.rfd, *fds, *([cue] if cue is not None else [])], [], [],
                                    max(0.0, wake - time.monotonic()))
        if sig.rfd in ready:
            sig.drain()
        if sig.stop:
            break
        if cue is not None and cue in ready:
            assert agent.fleet is not None
            agent.fleet.cue.drain()
            burst_until = time.monotonic() + BURST_S
            scan_due = time.monotonic()
        with guard():
            for fd in ready:
                if fd in fds:
                    agent.sync(fds[fd])
            lost = agent.reap()
            if agent.fleet is not None and time.monotonic() >= scan_due:
                agent.discover()
                now = time.monotonic()
                scan_due = now + (BURST_EVERY_S if now < burst_until else CONTAINER_SCAN_S)
        if agent.fleet is not None:
            agent.warm()
        if time.monotonic() >= flows_due:
            with guard():
                agent.tick_flows()
            flows_due = max(flows_due + FLOW_TICK_S, time.monotonic())
        if agent.fleet is not None:
            lost = []  # containers come and go: that is no news
        for label in lost:
            agent.notices.append(f"network namespace {label} was deleted; tcflow let it go")
        flush_notices(agent, sink)
        if lost and not agent.watches and agent.fleet is None:
            raise InterfaceError("the network namespace was deleted", netns=", ".join(lost),
                                 hint="tcflow detached and let it go; attach again in a new namespace")
        if not agent.links() and not following:
            raise InterfaceError("every attached interface is gone", hint="attach again, or use --match "
                                 "with --follow to wait for interfaces to appear")
        if time.monotonic() >= due:
            if not tick():
                break
            due += interval
            if due < time.monotonic():  # fell behind (suspended?): do not burst
                due = time.monotonic() + interval


def _attached_line(agent: Agent) -> str:
    return ", ".join(ln.key for ln in agent.links()) or "nothing yet"


def _left_pinned(args: argparse.Namespace, agent: Agent) -> None:
    note(f"left attached; counters stay pinned under {agent.pin_dir}: "
         f"`{fix_command(args, ('show',))}` reads them, `{fix_command(args, ('detach', '--all'))}` removes them")


class Notices(list[str]):
    """The last few notices of a live screen, each with its time."""

    def keep(self, text: str) -> None:
        self.append(f"{time.strftime('%H:%M:%S')} {printable(text)}")
        del self[:-3]


ALT_SCREEN_ON, ALT_SCREEN_OFF = "\x1b[?1049h", "\x1b[?1049l"
HOME, CLEAR_LINE, CLEAR_BELOW = "\x1b[H", "\x1b[K", "\x1b[J"


def cmd_attach(args: argparse.Namespace) -> int:
    from .doctor import require_root
    from .exporters.table import header, render, screen

    agent, targets = make_agent(args)
    require_root()
    live = not args.json and sys.stdout.isatty()
    shown = [0]
    prev: list[Optional[Snapshot]] = [None, None]  # the last snapshot, and the one before it
    kept = Notices()  # shown at the bottom of the live screen, newest last
    keep = kept.keep

    def emit() -> bool:
        snap = agent.snapshot()
        if args.json:
            out(json.dumps(document(snap)))
        elif live:
            size = shutil.get_terminal_size()
            lines = screen(snap, prev[0], args.interval, args.units, size.columns, size.lines, kept).split("\n")
            # each line clears what a longer one left before it, then everything below goes
            out(HOME + (CLEAR_LINE + "\n").join(lines) + CLEAR_LINE + CLEAR_BELOW, end="")
        else:  # a pipe or a file: every snapshot says when it was taken
            out(header(snap, args.interval, footer="") + "\n" + render(snap, prev[0], args.units) + "\n")
        prev[1], prev[0] = prev[0], snap
        shown[0] += 1
        return not (args.count and shown[0] >= args.count)

    sink = keep if live else note
    with _Signals() as sig:
        agent.start(targets)
        try:
            flush_notices(agent, sink)
            if not args.json and not live:
                note(f"attached to {_attached_line(agent)}; Ctrl-C to stop")
            if live:
                out(ALT_SCREEN_ON, end="")  # redraws leave nothing in the scrollback
            sig.looping = True
            if emit():
                try:
                    run_loop(agent, sig, args.interval, emit, threading.Lock, sink)
                except InterfaceError:
                    emit()  # what was counted up to the loss
                    raise
                if sig.stop:
                    emit()  # the last word on SIGINT/SIGTERM
        finally:
            try:
                if live:
                    out(ALT_SCREEN_OFF, end="")
                    if prev[0] is not None:  # the last screen stays readable after exit
                        out(render(prev[0], prev[1], args.units))
                    for text in kept:
                        note(text)
            finally:  # detached even when the terminal is gone
                agent.close()
                if args.pin:
                    _left_pinned(args, agent)
    return Exit.OK


def cmd_top(args: argparse.Namespace) -> int:
    from .doctor import require_root
    from .exporters.flowtable import screen, summary, table

    agent, targets = make_agent(args)
    require_root()
    live = not args.json and sys.stdout.isatty()
    size = shutil.get_terminal_size()
    agent.flows_top = args.top or max(10, size.lines)
    shown = [0]
    kept = Notices()  # shown at the bottom of the live screen, newest last
    keep = kept.keep

    def emit() -> bool:
        snap = agent.snapshot()
        if args.json:
            from .exporters.flowtable import rows
            out(json.dumps({"time": round(snap.time, 6), "flows": [
                {"interface": who, **f} for who, f in rows(snap)[:agent.flows_top]]}))
        elif live:
            sz = shutil.get_terminal_size()
            lines = screen(snap, args.units, sz.columns, sz.lines, kept).split("\n")
            out(HOME + (CLEAR_LINE + "\n").join(lines) + CLEAR_LINE + CLEAR_BELOW, end="")
        else:
            out(f"# {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(snap.time))} · {summary(snap)}")
            out("\n".join(table(snap, args.units, 120, agent.flows_top + 1)) + "\n")
        shown[0] += 1
        return not (args.count and shown[0] >= args.count)

    with _Signals() as sig:
        agent.start(targets)
        try:
            flush_notices(agent, keep if live else note)
            if live:
                out(ALT_SCREEN_ON, end="")
            sig.looping = True
            agent.tick_flows()
            if emit():
                run_loop(agent, sig, args.interval, emit, threading.Lock, keep if live else note)
        finally:
            try:
                if live:
                    out(ALT_SCREEN_OFF, end="")
                    for text in kept:
                        note(text)
            finally:
                agent.close()
    return Exit.OK


def parse_listen(text: str) -> tuple[str, int]:
    """HOST:PORT, [IPV6]:PORT -> (host, port)."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--listen {text} is not HOST:PORT", hint="e.g. --listen 127.0.0.1:8080")
    return host, int(port)


def cmd_serve(args: argparse.Namespace) -> int:
    from .doctor import require_root
    from .exporters.history import STEP_S, History
    from .exporters.http import Source, is_loopback, make_server

    host, port = parse_listen(args.listen)
    agent, targets = make_agent(args)
    require_root()
    history = History()
    if args.metrics_top_flows and not args.flows:
        raise UsageError("--metrics-top-flows needs --flows", hint="add --flows")
    agent.flows_top = max(agent.flows_top, args.metrics_top_flows)
    source = Source(agent.snapshot, lambda: agent.dp.program_stats() if agent.dp is not None else {}, agent.health,
                    history, args.metrics_top_flows)

    def record() -> bool:  # the dashboard's history: one point a step
        history.record(source.snapshot())
        return True

    try:
        server = make_server(host, port, source)
    except OSError as e:
        raise InterfaceError(f"cannot listen on {host}:{port}: {e.strerror}",
                             hint="choose another port with --listen HOST:PORT") from None
    stats_fd = -1
    serving = False
    with _Signals() as sig:
        try:
            agent.start(targets)
            try:
                stats_fd = _libbpf.enable_stats()
            except TcflowError as e:
                note(f"BPF run-time statistics unavailable ({e}); /metrics leaves out tcflow's own cost")
            flush_notices(agent)
            server.start()
            serving = True
            shown = f"[{host}]" if ":" in host else host
            if not is_loopback(host):
                note(f"listening on {shown}:{port}, reachable from other hosts (read-only endpoints)")
            note(f"attached to {_attached_line(agent)}; serving http://{shown}:{port}/ "
                 "(/traffic, /metrics, /healthz); Ctrl-C stops")
            sig.looping = True
            record()
            run_loop(agent, sig, STEP_S, record, lambda: source.lock)
            return Exit.OK
        finally:
            server.close()
            if stats_fd >= 0:
                os.close(stats_fd)  # the kernel goes back to its previous setting
            agent.close()
            if args.pin and serving:
                _left_pinned(args, agent)


# -- the pinned side: no bcc needed -------------------------------------------------
def cmd_show(args: argparse.Namespace) -> int:
    from .doctor import require_root
    from .exporters.table import render_all

    require_root()
    snap = pins.read_snapshot(args.pin_dir, containers=args.containers)
    out(json.dumps(document(snap)) if args.json else render_all(snap))
    return Exit.OK


def cmd_status(args: argparse.Namespace) -> int:
    from .doctor import require_root
    from .status import collect, render_status

    require_root()
    if args.containers:
        from . import container_status

        report = container_status.collect()
        out(json.dumps(report, indent=1) if args.json else container_status.render(report))
        return Exit.OK
    report = collect(args.pin_dir)
    out(json.dumps(report, indent=1) if args.json else render_status(report))
    return Exit.OK


def cmd_detach(args: argparse.Namespace) -> int:
    from .doctor import require_root
    from .status import detach_all, detach_named, detach_stale

    if sum((bool(args.all), bool(args.stale), bool(args.interfaces))) != 1:
        raise UsageError("name the interfaces to detach, or give --all or --stale (one of the three)",
                         hint="e.g. `tcflow detach eth1`, `tcflow detach ns1/veth0` or `tcflow detach --all`")
    require_root()
    if args.all:
        lines = detach_all(args.pin_dir)
    elif args.stale:
        lines = detach_stale(args.pin_dir)
    else:
        lines = detach_named(args.interfaces, Where(args.netns, args.pid), args.pin_dir)
    for line in lines:
        out(line)
    return Exit.OK


def cmd_doctor(args: argparse.Namespace) -> int:
    from .doctor import report, run_checks

    text, ok = report(run_checks())
    out(text)
    return Exit.OK if ok else Exit.ERROR


def cmd_completion(args: argparse.Namespace) -> int:
    out(bash(parser()), end="")
    return Exit.OK


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run

    return run(seconds=args.seconds, ingress=args.ingress, out=out)


# -- the parser ----------------------------------------------------------------
class Parser(argparse.ArgumentParser):
    """argparse, with its errors as one line that says where the help is."""

    def error(self, message: str) -> NoReturn:
        self.exit(Exit.USAGE, f"tcflow: error: {message} (`{self.prog} --help` lists the options)\n")


def _parents() -> dict[str, Parser]:
    where = Parser(add_help=False)
    pin_dir_type = pin_dir
    where.add_argument("--netns", metavar="NAME", type=namespace_name,
                       help="plain IFACE names are in this network namespace "
                       "(an `ip netns` name, or a path such as /proc/PID/ns/net)")
    where.add_argument("--pid", type=int, help="plain IFACE names are in this process's network namespace "
                       "(a container)")
    pins_parent = Parser(add_help=False)
    pins_parent.add_argument("--pin-dir", type=pin_dir_type, default=pins.default_pin_dir(), metavar="DIR",
                             help="bpffs directory of the pins (default $TCFLOW_PIN_DIR or /sys/fs/bpf/tcflow)")
    targets = Parser(add_help=False, parents=[where, pins_parent])
    targets.add_argument("interfaces", nargs="*", metavar="IFACE",
                         help="interfaces to count: IFACE or NETNS/IFACE (NETNS: an `ip netns` name or pid:N)")
    targets.add_argument("--match", action="append", metavar="GLOB",
                         help="also every interface whose name matches, e.g. 'veth*' or 'ns1/veth*' "
                              "(repeatable; lo only when named)")
    targets.add_argument("--follow", action="store_true",
                         help="with --match: attach to matching interfaces that appear later; drop ones that go")
    targets.add_argument("--ingress", choices=INGRESS_CHOICES, default="auto",
                         help="recv hook: auto (default: native XDP on physical NICs, clsact on virtual devices "
                              "and where native XDP is refused), xdp or tc")
    targets.add_argument("--xdp-mode", choices=XDP_MODES, default="auto",
                         help="with XDP: auto (native, else generic), native or generic; implies --ingress xdp")
    targets.add_argument("--include-local", action="store_true",
                         help="count loopback and src == dst traffic in the classes, not only as local")
    targets.add_argument("--containers", action="store_true",
                         help="also every running container (Docker, containerd, CRI-O, Podman, LXC, nspawn), "
                              "counted in its own namespace and named; new ones within a second")
    targets.add_argument("--pin", action="store_true",
                         help="pin the counters, adopt pinned attachments, and leave the programs attached on exit")
    targets.add_argument("--max-interfaces", type=max_interfaces, default=DEFAULT_MAX_IFACES, metavar="N",
                         help=f"interfaces the maps hold, 1 to {MAX_INTERFACES_LIMIT} (default {DEFAULT_MAX_IFACES})")
    targets.add_argument("--flows", action="store_true",
                         help="also count per five-tuple (both directions of a connection in one flow); "
                              "JSON and /traffic then list each interface's top flows")
    targets.add_argument("--flow-entries", type=flow_entries, default=DEFAULT_FLOW_ENTRIES, metavar="N",
                         help=f"with --flows: flows the table holds, all interfaces together, {MIN_FLOW_ENTRIES} to "
                              f"{MAX_FLOW_ENTRIES} (default {DEFAULT_FLOW_ENTRIES}); past it, new flows count "
                              "in an overflow total")
    targets.add_argument("--flow-idle", type=positive_seconds, default=IDLE_S, metavar="SECONDS",
                         help=f"with --flows: a flow unchanged this long leaves the table, its bytes kept in the "
                              f"interface's evicted total (default {IDLE_S:g})")
    targets.add_argument("--flows-top", type=top_count, default=DEFAULT_TOP, metavar="N",
                         help=f"with --flows: flows listed per interface in JSON and /traffic, by rate "
                              f"(default {DEFAULT_TOP}, at most {MAX_TOP})")
    return {"where": where, "pin_dir": pins_parent, "targets": targets}


def parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parents = _parents()
    p = Parser(prog="tcflow", description="Per-interface traffic counters from XDP/TC eBPF.",
                                epilog=EPILOG, formatter_class=fmt)
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("--version", action="version", version=f"tcflow {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    a = sub.add_parser("attach", help="attach and print counters (live table or JSON lines)",
                       description="Attach tcflow's programs and print the counters every interval.",
                       epilog=ATTACH_EPILOG, formatter_class=fmt, parents=[parents["targets"]])
    a.add_argument("--interval", type=positive_seconds, default=1.0, metavar="SECONDS",
                   help="between snapshots (default 1)")
    a.add_argument("--count", type=count, default=0, metavar="N", help="stop after N snapshots (default 0: never)")
    a.add_argument("--json", action="store_true", help="one JSON object per snapshot per line")
    a.add_argument("--units", choices=["bytes", "bits"], default="bytes",
                   help="rates in bytes or bits a second (default bytes; counters are always bytes)")
    a.set_defaults(func=cmd_attach)

    tp = sub.add_parser("top", help="the busiest flows (five-tuples) live, like iftop; counts flows as --flows does",
                        description="Attach with flow counting and show the flows with the highest rates.",
                        epilog="examples:\n  sudo tcflow top eth1\n  sudo tcflow top --containers\n"
                               "  sudo tcflow top --match 'veth*' --follow --units bits\n"
                               "  sudo tcflow top eth1 --json --count 5 --top 20",
                        formatter_class=fmt, parents=[parents["targets"]])
    tp.add_argument("--interval", type=positive_seconds, default=1.0, metavar="SECONDS",
                    help="between screens (default 1); rates are over the last second")
    tp.add_argument("--count", type=count, default=0, metavar="N", help="stop after N screens (default 0: never)")
    tp.add_argument("--json", action="store_true", help="one JSON object per interval: the top flows, busiest first")
    tp.add_argument("--top", type=top_count, default=0, metavar="N",
                    help="flows shown (default: as many as fit the terminal; 24 when piped)")
    tp.add_argument("--units", choices=["bytes", "bits"], default="bytes",
                    help="rates in bytes or bits a second (default bytes)")
    tp.set_defaults(func=cmd_top)

    sv = sub.add_parser("serve", help="attach, and serve /traffic (JSON), /metrics (Prometheus) and a dashboard",
                        description="Attach like `attach`, then serve the counters over HTTP until stopped.",
                        epilog=SERVE_EPILOG, formatter_class=fmt, parents=[parents["targets"]])
    sv.add_argument("--listen", default="127.0.0.1:8080", metavar="HOST:PORT",
                    help="where to serve (default 127.0.0.1:8080; anything else must be asked for)")
    sv.add_argument("--metrics-top-flows", type=metrics_top, default=0, metavar="N",
                    help=f"with --flows: also a series per flow in /metrics for each interface's N busiest flows "
                         f"(default 0: only flow counts and evictions; at most {MAX_METRICS_TOP})")
    sv.set_defaults(func=cmd_serve)

    s = sub.add_parser("show", help="print the counters that --pin left running",
                       epilog="examples:\n  sudo tcflow show\n  sudo tcflow show --json",
                       formatter_class=fmt, parents=[parents["pin_dir"]])
    s.add_argument("--json", action="store_true", help="one JSON object, as attach --json prints")
    s.add_argument("--containers", action="store_true",
                   help="only the running containers' interfaces, with their names and ids")
    s.set_defaults(func=cmd_show)

    st = sub.add_parser("status", help="what tcflow has attached, where, and what else is on those hooks",
                        epilog="examples:\n  sudo tcflow status\n  sudo tcflow status --json\n"
                               "  sudo tcflow status --containers", formatter_class=fmt,
                        parents=[parents["pin_dir"]])
    st.add_argument("--json", action="store_true", help="the same report as one JSON object")
    st.add_argument("--containers", action="store_true",
                    help="every running container instead: its interfaces, the host-side veth of each, and "
                         "whether tcflow counts it")
    st.set_defaults(func=cmd_status)

    d = sub.add_parser("detach", help="remove tcflow from interfaces (pinned or left by a killed tcflow)",
                       epilog="examples:\n  sudo tcflow detach eth1\n  sudo tcflow detach ns1/veth0\n"
                              "  sudo tcflow detach --all          every pinned attachment, and the pins\n"
                              "  sudo tcflow detach --stale        pinned entries of interfaces that are gone",
                       formatter_class=fmt, parents=[parents["where"], parents["pin_dir"]])
    d.add_argument("interfaces", nargs="*", metavar="IFACE", help="IFACE or NETNS/IFACE, as for attach")
    d.add_argument("--all", action="store_true", help="every pinned attachment, then the pins themselves")
    d.add_argument("--stale", action="store_true",
                   help="only pinned entries whose interface or namespace is gone (left by an earlier run)")
    d.set_defaults(func=cmd_detach)

    dr = sub.add_parser("doctor", help="check root, bpf(), bcc, kernel headers, clsact and XDP",
                        epilog="examples:\n  sudo tcflow doctor", formatter_class=fmt)
    dr.set_defaults(func=cmd_doctor)

    co = sub.add_parser("completion", help="print a bash completion script (make setup installs it)",
                        epilog="examples:\n  tcflow completion bash > /usr/share/bash-completion/completions/tcflow\n"
                               "  source <(tcflow completion bash)", formatter_class=fmt)
    co.add_argument("shell", choices=["bash"], help="the shell (bash)")
    co.set_defaults(func=cmd_completion)

    de = sub.add_parser("demo", help="self-contained demo in throwaway namespaces",
                        epilog="examples:\n  sudo tcflow demo\n  sudo tcflow demo --seconds 10 --ingress xdp",
                        formatter_class=fmt)
    de.add_argument("--seconds", type=positive_seconds, default=3.0, help="how long to send traffic (default 3)")
    de.add_argument("--ingress", choices=["xdp", "tc"], default="tc", help="recv hook to demonstrate (default tc)")
    de.set_defaults(func=cmd_demo)
    return p


def fix_command(args: argparse.Namespace, words: Sequence[str]) -> str:
    """``tcflow WORDS`` plus the options the user gave that WORDS' command
    takes too (a --pin-dir, a --netns for plain names), so pasting it works."""
    extra: list[str] = []
    command = words[0] if words else ""
    sub = subcommands(parser()).get(command)
    takes = {a.dest for a in sub._actions} if sub else set()
    if "pin_dir" in takes and getattr(args, "pin_dir", None) not in (None, pins.default_pin_dir()):
        extra += ["--pin-dir", args.pin_dir]
    named = [w for w in words[1:] if not w.startswith("-")]
    plain = bool(named) and not any("/" in w for w in named)  # plain names: the namespace must come along
    if plain and "netns" in takes and getattr(args, "netns", None):
        extra += ["--netns", args.netns]
    if plain and "pid" in takes and getattr(args, "pid", None):
        extra += ["--pid", str(args.pid)]
    return "tcflow " + shell_words([*words, *extra])


def _quiet_stdout() -> None:
    """Point fd 1 at /dev/null, so that Python's flush at exit finds no closed pipe to complain about."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except TcflowError as e:
        if args.debug:
            raise
        print(f"tcflow: error: {printable(e.render(lambda words: fix_command(args, words)))}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return Exit.INTERRUPTED
    except OutputClosed:
        _quiet_stdout()
        return Exit.OK
    except Exception as e:  # a bug, or something tcflow did not foresee
        if args.debug:
            raise
        text = printable(" ".join(str(e).split()) or type(e).__name__)
        print(f"tcflow: error: {type(e).__name__}: {text} (run with --debug for the traceback, and please "
              "report it)", file=sys.stderr)
        return Exit.ERROR
