"""tcflow's argument parser: the commands, their options, their help, and
how a parsed command line becomes Settings and targets. Bad values are
usage errors (exit 2) with the fix; the library rules themselves are checked
by Settings (tcflow/engine/settings.py), for Monitor users too."""

from __future__ import annotations

import argparse
import ipaddress
import math
import os
from typing import Callable, NoReturn, Sequence

from tcflow.bpf.loader import DEFAULT_FLOW_ENTRIES, DEFAULT_MAX_IFACES
from tcflow.cli.completion import subcommands
from tcflow.engine.flows import DEFAULT_TOP, IDLE_S
from tcflow.engine.privileges import Mode
from tcflow.engine.settings import (
    INGRESS_CHOICES,
    MAX_FLOW_ENTRIES,
    MAX_INTERFACES_LIMIT,
    MAX_TOP,
    MIN_FLOW_ENTRIES,
    XDP_MODES,
    Settings,
)
from tcflow.host import pins
from tcflow.model.errors import UsageError, shell_words
from tcflow.model.targets import Target, Where, group, split
from tcflow.model.version import __version__
from tcflow.output.top import SORTS

MAX_METRICS_TOP = 50
EXIT_USAGE = 2

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

PACKETS_NOTE = """
Packets and bytes are the wire's: a GSO/GRO aggregate counts as the segments
it stands for, each with its headers. On interfaces with offloads (veths,
most NICs) they are above `ip -s link` and node_exporter, which count each
aggregate once.
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
""" + PACKETS_NOTE

SERVE_EPILOG = """examples:
  sudo tcflow serve eth1
  sudo tcflow serve ns1/veth0 ns2/veth0
  sudo tcflow serve --pin --match 'veth*' --follow --listen 127.0.0.1:9462
  sudo tcflow serve --containers --pin --listen 127.0.0.1:9462
  sudo tcflow serve --flows --metrics-top-flows 5 eth1
  sudo tcflow serve --containers --web.listen-address 0.0.0.0:9462 --web.config.file /etc/tcflow/web.yml
  curl -s localhost:8080/traffic
  curl -s localhost:8080/metrics

Binds 127.0.0.1:8080 unless --web.listen-address (or --listen) says otherwise.
--web.config.file takes node_exporter's file: TLS, mTLS, basic auth. Endpoints are read-only:
GET/HEAD /, /traffic, /metrics, /history, /classes, /healthz; other paths
404, other methods 405.
"""


# -- argument types: a bad value is a usage error (exit 2) ---------------------
def positive_seconds(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = math.nan
    if not math.isfinite(v) or v <= 0 or v > 86400:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds above 0 and at most 86400 (e.g. 0.5)")
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


def _at_most(limit: int, why: str = "") -> Callable[[str], int]:
    """A whole number >= 0 (0: none or no limit) and at most ``limit``."""
    def parse(text: str) -> int:
        n = count(text)
        if n > limit:
            raise argparse.ArgumentTypeError(f"{text} is more than {limit}{why}")
        return n
    return parse


top_count = _at_most(MAX_TOP)


def port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (1 to 65535)")
    return int(text)


def cidr(text: str) -> "ipaddress.IPv4Network | ipaddress.IPv6Network":
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an address or CIDR (e.g. 198.18.0.0/15 or "
                                         "2001:db8::1)") from None


metrics_top = _at_most(MAX_METRICS_TOP, " (one series per flow and direction)")


def max_interfaces(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= MAX_INTERFACES_LIMIT:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number from 1 to {MAX_INTERFACES_LIMIT}")
    return int(text)


def settings_of(args: argparse.Namespace) -> tuple[Settings, list[Target]]:
    """The Settings and targets a command line asks for (a UsageError if they clash)."""
    targets = []
    if args.interfaces or args.match or args.follow or not args.containers:
        targets = group(args.interfaces, args.match or (), args.follow, Where(args.netns, args.pid), args.command)
    flows = bool(getattr(args, "flows", False)) or args.command == "top"
    return Settings(args.ingress, args.xdp_mode, args.include_local, args.pin, args.pin_dir if args.pin else None,
                    args.containers, args.max_interfaces, flows, args.flow_entries, args.flow_idle,
                    args.flows_top), targets


def mode_of(args: argparse.Namespace) -> Mode:
    """What this command line does, for the capability check (engine/privileges.py)."""
    default = Where(getattr(args, "netns", None), getattr(args, "pid", None))
    wheres = [default]
    if args.command in ("attach", "top", "serve"):
        wheres += [t.where for t in settings_of(args)[1]]
    elif args.command == "detach":
        wheres += [split(word, default)[0] for word in args.interfaces or ()]
    containers = bool(getattr(args, "containers", False))
    proc = containers or any(w.pid is not None or (w.netns or "").startswith("/proc/") for w in wheres)
    # show --containers only names the pins' namespaces (a stat of /proc/PID/ns/net); the others enter them
    netns = args.command != "show" and (proc or any(w.netns is not None for w in wheres))
    load = args.command in ("attach", "top", "serve")
    pin_dir = getattr(args, "pin_dir", None)
    mount = load and bool(getattr(args, "pin", False)) and pin_dir is not None \
        and os.path.dirname(pin_dir) == pins.BPFFS and not pins.is_bpffs(pins.BPFFS)
    return Mode(load=load, unhook=args.command == "detach", netns=netns, proc=proc, mount=mount,
                front=args.command == "serve")


class Parser(argparse.ArgumentParser):
    """argparse, with its errors as one line that says where the help is."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"tcflow: error: {message} (`{self.prog} --help` lists the options)\n")


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

    tp = sub.add_parser("top", help="the busiest flows (five-tuples) live, like iftop; counts flows as --flows does",
                        description="Attach with flow counting and show the flows with the highest rates.",
                        epilog="examples:\n  sudo tcflow top eth1\n  sudo tcflow top --containers\n"
                               "  sudo tcflow top --match 'veth*' --follow --units bits\n"
                               "  sudo tcflow top eth1 --json --count 5 --top 20\n"
                               "  sudo tcflow top --containers --where web --proto tcp --port 443\n"
                               "  sudo tcflow top eth1 --host 198.18.0.0/15 --sort 40s\n\n"
                               "On a terminal: q quits, p pauses, s/r/t sort by sent/received/total, h helps.\n"
                               "RECV and SENT are 2 s averages, 10s and 40s both ways, TOTAL bytes since start;\n"
                               "the last lines are iftop's totals (cumulative, peak, 2/10/40 s averages).\n"
                               "No names are resolved: tcflow makes no DNS queries. With --json, the first line\n"
                               "comes after one interval, with averages already in it.",
                        formatter_class=fmt, parents=[parents["targets"]])
    tp.add_argument("--interval", type=positive_seconds, default=1.0, metavar="SECONDS",
                    help="between screens (default 1); rates are over the last second")
    tp.add_argument("--count", type=count, default=0, metavar="N", help="stop after N screens (default 0: never)")
    tp.add_argument("--json", action="store_true", help="one JSON object per interval: the top flows, busiest first")
    tp.add_argument("--top", type=top_count, default=0, metavar="N",
                    help="flows shown (default: as many as fit the terminal; 24 when piped)")
    tp.add_argument("--units", choices=["bytes", "bits"], default="bytes",
                    help="rates in bytes or bits a second (default bytes)")
    tp.add_argument("--port", type=port, metavar="PORT", help="only flows with this port on either end")
    tp.add_argument("--host", type=cidr, metavar="CIDR",
                    help="only flows with an end in this address or network (either side)")
    tp.add_argument("--proto", choices=["tcp", "udp", "icmp"], help="only this protocol (icmp: v4 and v6)")
    tp.add_argument("--where", metavar="NAME",
                    help="only this interface (its /traffic key, e.g. ns1/veth0), or every interface of one "
                         "namespace or container (ns1, web)")
    tp.add_argument("--sort", choices=list(SORTS), default="total",
                    help="busiest first by: total (2 s average both ways, the default), recv, sent, 10s, 40s, "
                         "or bytes since start; keys s, r, t change it live")

    sv = sub.add_parser("serve", help="attach, and serve /traffic (JSON), /metrics (Prometheus) and a dashboard",
                        description="Attach like `attach`, then serve the counters over HTTP until stopped.",
                        epilog=SERVE_EPILOG, formatter_class=fmt, parents=[parents["targets"]])
    sv.add_argument("--web.listen-address", "--listen", dest="listen", action="append", metavar="HOST:PORT",
                    help="where to serve; repeat for more addresses (default 127.0.0.1:8080; anything else must be "
                         "asked for). --listen is the same option")
    sv.add_argument("--web.config.file", dest="web_config_file", metavar="FILE",
                    help="TLS, client certificates, basic auth (bcrypt) and response headers, in Prometheus "
                         "exporter-toolkit's web configuration format (the file node_exporter takes); re-read "
                         "on each connection when it or a file it names changed")
    sv.add_argument("--web.telemetry-path", dest="telemetry_path", default="/metrics", metavar="PATH",
                    help="where Prometheus metrics are served (default /metrics)")
    sv.add_argument("--metrics-top-flows", type=metrics_top, default=0, metavar="N",
                    help=f"with --flows: also a series per flow in /metrics for each interface's N busiest flows "
                         f"(default 0: only flow counts and evictions; at most {MAX_METRICS_TOP})")

    s = sub.add_parser("show", help="print the counters that --pin left running",
                       epilog="examples:\n  sudo tcflow show\n  sudo tcflow show --json\n" + PACKETS_NOTE,
                       formatter_class=fmt, parents=[parents["pin_dir"]])
    s.add_argument("--json", action="store_true", help="one JSON object, as attach --json prints")
    s.add_argument("--containers", action="store_true",
                   help="only the running containers' interfaces, with their names and ids")

    st = sub.add_parser("status", help="what tcflow has attached, where, and what else is on those hooks",
                        epilog="examples:\n  sudo tcflow status\n  sudo tcflow status --json\n"
                               "  sudo tcflow status --containers", formatter_class=fmt,
                        parents=[parents["pin_dir"]])
    st.add_argument("--json", action="store_true", help="the same report as one JSON object")
    st.add_argument("--containers", action="store_true",
                    help="every running container instead: its interfaces, the host-side veth of each, and "
                         "whether tcflow counts it")

    d = sub.add_parser("detach", help="remove tcflow from interfaces (pinned or left by a killed tcflow)",
                       epilog="examples:\n  sudo tcflow detach eth1\n  sudo tcflow detach ns1/veth0\n"
                              "  sudo tcflow detach --all          every pinned attachment, and the pins\n"
                              "  sudo tcflow detach --stale        pinned entries of interfaces that are gone",
                       formatter_class=fmt, parents=[parents["where"], parents["pin_dir"]])
    d.add_argument("interfaces", nargs="*", metavar="IFACE", help="IFACE or NETNS/IFACE, as for attach")
    d.add_argument("--all", action="store_true", help="every pinned attachment, then the pins themselves")
    d.add_argument("--stale", action="store_true",
                   help="only pinned entries with nothing attached: interface, namespace or hooks gone")
    d.add_argument("--force", action="store_true",
                   help="detach even what a running tcflow is counting (it notices within a second, says so "
                        "and stops counting it); without it, that is refused with the process's pid")

    sub.add_parser("doctor", help="check root, bpf(), bcc, kernel headers, clsact and XDP",
                        epilog="examples:\n  sudo tcflow doctor", formatter_class=fmt)

    co = sub.add_parser("completion", help="print a completion script for bash, zsh or fish (make setup installs "
                        "bash's)", epilog="examples:\n"
                        "  tcflow completion bash > /usr/share/bash-completion/completions/tcflow\n"
                        "  source <(tcflow completion bash)\n"
                        "  tcflow completion zsh > \"${fpath[1]}/_tcflow\"\n"
                        "  tcflow completion fish > ~/.config/fish/completions/tcflow.fish", formatter_class=fmt)
    co.add_argument("shell", choices=["bash", "zsh", "fish"], help="the shell")

    de = sub.add_parser("demo", help="self-contained demo in throwaway namespaces",
                        epilog="examples:\n  sudo tcflow demo\n  sudo tcflow demo --seconds 10 --ingress xdp",
                        formatter_class=fmt)
    de.add_argument("--seconds", type=positive_seconds, default=3.0, help="how long to send traffic (default 3)")
    de.add_argument("--ingress", choices=["xdp", "tc"], default="tc", help="recv hook to demonstrate (default tc)")
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


