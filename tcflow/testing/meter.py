"""Meter: what crossed one interface during a ``with`` block, exactly.

    with Meter("eth0", netns="app") as m:
        run_my_client()
    assert m.bytes["L4_UDP_SEND_V4"] == 9100
    m.assert_only_flows(["udp 198.18.0.2:53"])

On entry a Meter attaches tcflow to the interface (clsact ingress and
egress by default: what the kernel's stack hands it, GSO aggregates counted
as their segments, docs/SPEC.md's rules) with per-flow counting; on exit it
waits until the counters stand still (bounded), keeps the deltas and
detaches. ``bytes`` and ``packets`` have every class name (as `tcflow show
--json` keys them) and ``flows`` each five-tuple's counts. The assertions
say what differs in a table a CI log can be read by; a plugin hook puts the
meter's figures into the report of a failing test (and its JUnit XML).
"""

from __future__ import annotations

import ipaddress
import subprocess
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Union

from tcflow.model.classes import BY_NAME, NAMES

SETTLE_STEP_S = 0.05
SETTLE_SAME = 3      # reads in a row that agree: the counters stand still
SETTLE_MAX_S = 5.0   # ... or give up waiting and keep the last read
FLOW_LIMIT = 1000    # flows a meter lists (tcflow's --flows-top at most)
FLOW_ENTRIES = 4096  # its flow table
ND_TYPES = frozenset({133, 134, 135, 136, 137})  # ICMPv6 neighbour discovery and redirect

# Meters that ended during the current test, for the plugin's report of a failure.
finished: list["Meter"] = []


@dataclass(frozen=True)
class Flow:
    """One five-tuple seen on the metered interface during the block.
    ``local`` is the interface's side (address, port); ports are None for
    protocols without them, whose ICMP/ICMPv6 type is ``icmp_type``. Bytes
    are IP bytes (headers included), ``payload`` TCP/UDP payload."""

    protocol: str
    family: str
    local: tuple[str, Optional[int]]
    remote: tuple[str, Optional[int]]
    icmp_type: Optional[int]
    bytes_sent: int
    bytes_received: int
    payload_sent: int
    payload_received: int
    packets_sent: int
    packets_received: int

    @property
    def key(self) -> tuple[str, tuple[str, Optional[int]], tuple[str, Optional[int]], Optional[int]]:
        return self.protocol, self.local, self.remote, self.icmp_type

    def __str__(self) -> str:
        kind = f" type {self.icmp_type}" if self.icmp_type is not None else ""
        return f"{self.protocol}{kind} {_endpoint(self.local)} <-> {_endpoint(self.remote)}"


def _endpoint(e: tuple[str, Optional[int]]) -> str:
    addr = f"[{e[0]}]" if ":" in e[0] and e[1] is not None else e[0]
    return addr if e[1] is None else f"{addr}:{e[1]}"


FlowPattern = Union[str, Callable[[Flow], bool]]


def flow_matcher(pattern: FlowPattern) -> Callable[[Flow], bool]:
    """A pattern as a predicate. A string is ``PROTOCOL [ADDRESS][:PORT]``
    naming the remote end (``*`` for any address or port; IPv6 addresses in
    brackets with a port): ``"udp 198.18.0.2:53"``, ``"tcp *:443"``,
    ``"tcp [2001:db8::2]:80"``, ``"icmp 198.18.0.2"``, ``"icmpv6"``; a
    callable takes a Flow."""
    if callable(pattern):
        return pattern
    parts = pattern.split()
    if not parts or len(parts) > 2:
        raise ValueError(f"flow pattern {pattern!r}: use 'PROTOCOL [ADDRESS][:PORT]', e.g. 'udp 198.18.0.2:53'")
    proto = parts[0].lower()
    addr: Optional[str] = None
    port: Optional[int] = None
    if len(parts) == 2:
        spec = parts[1]
        if spec.startswith("["):
            host, _, rest = spec[1:].partition("]")
            addr, port_s = host, rest[1:] if rest.startswith(":") else ""
        elif spec.count(":") == 1:
            addr, port_s = spec.split(":")
        else:
            addr, port_s = spec, ""
        addr = None if addr in ("", "*") else str(ipaddress.ip_address(addr))
        if port_s not in ("", "*"):
            if not port_s.isdigit() or not 0 <= int(port_s) <= 65535:
                raise ValueError(f"flow pattern {pattern!r}: {port_s!r} is not a port")
            port = int(port_s)

    def match(f: Flow) -> bool:
        return (proto in ("*", f.protocol) and (addr is None or f.remote[0] == addr)
                and (port is None or f.remote[1] == port))

    return match


def _family_tag(family: Union[int, str, None]) -> Optional[str]:
    if family is None:
        return None
    tag = {4: "V4", 6: "V6", "4": "V4", "6": "V6", "ipv4": "V4", "ipv6": "V6"}.get(family)
    if tag is None:
        raise ValueError(f"family {family!r}: use 4 or 6")
    return tag


class Meter:
    """Counts on ``interface`` in namespace ``netns`` (a name under
    /run/netns, or a path) or that of process ``pid`` for the duration of a
    ``with`` block. ``ingress``: "tc" (default) or "xdp"; ``include_local``:
    count loopback and same-address traffic in the classes; ``flows``:
    also per five-tuple (default). ``settle``: on exit, wait until the
    counters stand still (at most SETTLE_MAX_S)."""

    def __init__(self, interface: str, netns: Optional[str] = None, pid: Optional[int] = None, *,
                 ingress: str = "tc", include_local: bool = False, flows: bool = True, settle: bool = True):
        self.interface, self.netns, self.pid = interface, netns, pid
        self.ingress, self.include_local, self.with_flows, self.settle = ingress, include_local, flows, settle
        self.key = ""
        self.bytes: dict[str, int] = dict.fromkeys(NAMES, 0)
        self.packets: dict[str, int] = dict.fromkeys(NAMES, 0)
        self.flows: list[Flow] = []
        self.flows_complete = True  # False: more flows than FLOW_LIMIT, or some evicted or past the table
        self.seconds = 0.0
        self.done = False
        self._monitor: Any = None
        self._base: tuple[dict[str, int], dict[str, int], dict[tuple[Any, ...], Flow]] = ({}, {}, {})
        self._t0 = 0.0

    @classmethod
    def container(cls, name: str, interface: str = "eth0", docker: Sequence[str] = ("docker",),
                  **options: Any) -> "Meter":
        """A Meter on a Docker container's interface (its namespace found by
        ``docker inspect``; ``docker``: the command, e.g. ("docker", "-H",
        "unix:///run/my.sock"))."""
        r = subprocess.run([*docker, "inspect", "-f", "{{.State.Pid}}", name], capture_output=True, text=True,
                           timeout=60)
        pid = r.stdout.strip()
        if r.returncode != 0 or not pid.isdigit() or pid == "0":
            raise RuntimeError(f"container {name!r} is not running: {r.stderr.strip() or 'no pid'}")
        return cls(interface, pid=int(pid), **options)

    # -- the block ----------------------------------------------------------
    def __enter__(self) -> "Meter":
        from tcflow.engine.monitor import Monitor

        self._monitor = Monitor([self.interface], netns=self.netns, pid=self.pid, ingress=self.ingress,
                                include_local=self.include_local, flows=self.with_flows,
                                flow_entries=FLOW_ENTRIES, flows_top=FLOW_LIMIT, flow_idle=86400.0)
        self._monitor.attach()
        try:
            snap = self._monitor.snapshot()
            self.key = next(iter(snap.interfaces))
            self._base = self._read(snap)
        except BaseException:
            self._monitor.close()
            raise
        self._t0 = time.monotonic()
        return self

    def __exit__(self, t: Optional[type[BaseException]], e: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        try:
            last = self._read(self._monitor.snapshot())
            if self.settle:
                last = self._settled(last)
            self.seconds = time.monotonic() - self._t0
            self._keep(last)
        finally:
            self._monitor.close()
            self._monitor = None
            finished.append(self)

    def _read(self, snap: Any) -> tuple[dict[str, int], dict[str, int], dict[tuple[Any, ...], Flow]]:
        c = snap.interfaces[self.key]
        flows: dict[tuple[Any, ...], Flow] = {}
        doc = (snap.flows or {}).get(self.key)
        if doc is not None:
            for d in doc["top"]:
                f = _flow(d)
                flows[f.key] = f
            if doc["active"] > len(doc["top"]) or any(doc["evicted"]["packets"].values()) \
                    or any(doc["overflow"]["packets"].values()):
                self.flows_complete = False
        return dict(c.bytes), dict(c.packets), flows

    def _settled(self, last: tuple[dict[str, int], dict[str, int], dict[tuple[Any, ...], Flow]]) -> Any:
        end = time.monotonic() + SETTLE_MAX_S
        same = 1
        while same < SETTLE_SAME and time.monotonic() < end:
            time.sleep(SETTLE_STEP_S)
            cur = self._read(self._monitor.snapshot())
            same = same + 1 if cur[1] == last[1] else 1
            last = cur
        return last

    def _keep(self, last: tuple[dict[str, int], dict[str, int], dict[tuple[Any, ...], Flow]]) -> None:
        b0, p0, f0 = self._base
        self.bytes = {n: last[0][n] - b0.get(n, 0) for n in NAMES}
        self.packets = {n: last[1][n] - p0.get(n, 0) for n in NAMES}
        out = []
        for k, f in last[2].items():
            before = f0.get(k)
            if before is not None:
                f = _minus(f, before)
            if f.packets_sent or f.packets_received:
                out.append(f)
        self.flows = sorted(out, key=lambda f: (-(f.bytes_sent + f.bytes_received), str(f)))
        self.done = True

    # -- questions -----------------------------------------------------------
    def total(self, family: Union[int, str, None] = None, layer: str = "L3", direction: Optional[str] = None,
              measure: str = "bytes") -> int:
        """Bytes (or packets) over the classes of one ``layer`` ("L3": IP
        bytes, "L4": payload), of one family (4, 6) and ``direction``
        ("send", "recv") if given."""
        tag = _family_tag(family)
        values = self.bytes if measure == "bytes" else self.packets
        return sum(v for n, v in values.items() if BY_NAME[n].layer == layer
                   and (tag is None or n.endswith(tag)) and (direction is None or BY_NAME[n].direction == direction))

    def flows_matching(self, pattern: FlowPattern) -> list[Flow]:
        """The flows a pattern matches (see flow_matcher)."""
        match = flow_matcher(pattern)
        return [f for f in self.flows if match(f)]

    # -- assertions ---------------------------------------------------------
    def assert_bytes(self, expected: Optional[Mapping[str, int]] = None, *, exact: bool = False,
                     **classes: int) -> None:
        """Each class given has exactly these bytes; ``exact``: every other
        class is 0. Fails with a table of expected against got."""
        self._assert_classes("bytes", self.bytes, {**(expected or {}), **classes}, exact)

    def assert_packets(self, expected: Optional[Mapping[str, int]] = None, *, exact: bool = False,
                       **classes: int) -> None:
        """As assert_bytes, for packets."""
        self._assert_classes("packets", self.packets, {**(expected or {}), **classes}, exact)

    def _assert_classes(self, measure: str, got: Mapping[str, int], want: Mapping[str, int], exact: bool) -> None:
        self._require_done()
        unknown = sorted(set(want) - set(NAMES))
        if unknown:
            raise ValueError(f"no class {', '.join(unknown)}; the classes are {', '.join(NAMES)}")
        names = [n for n in NAMES if n in want or (exact and got[n])]
        wrong = [n for n in names if got[n] != want.get(n, 0)]
        if wrong:
            rows = [(n, str(want.get(n, 0)), str(got[n]), "<-" if n in wrong else "") for n in names]
            raise AssertionError(f"{self.key}: {len(wrong)} of {len(names)} classes differ in {measure}\n"
                                 + _table(("class", "expected", "got", ""), rows))

    def assert_no_traffic(self, family: Union[int, str, None] = None, protocol: Optional[str] = None) -> None:
        """Nothing of this family (4, 6) and protocol ("tcp", "udp", "icmp",
        "icmpv6", any other number) crossed the interface; none at all when
        neither is given."""
        self._require_done()
        tag = _family_tag(family)
        proto_class = {"tcp": "TCP", "udp": "UDP"}.get(protocol or "", "RAW" if protocol else None)
        bad_classes = [n for n in NAMES if self.packets[n] and BY_NAME[n].layer == "L3"
                       and (tag is None or n.endswith(tag)) and (proto_class is None or f"_{proto_class}_" in n)]
        if tag is None and protocol is None:
            bad_classes = [n for n in NAMES if self.packets[n] and BY_NAME[n].layer != "L4"]
        fam = {"V4": "ipv4", "V6": "ipv6"}.get(tag or "")
        bad_flows = [f for f in self.flows if (fam is None or f.family == fam)
                     and (protocol is None or f.protocol == protocol)]
        if bad_classes or bad_flows:
            what = " ".join(x for x in (f"IPv{family}" if family else "", protocol or "") if x) or "traffic"
            rows = [(n, str(self.packets[n]), str(self.bytes[n])) for n in bad_classes]
            msg = f"{self.key}: expected no {what}, got {sum(self.packets[n] for n in bad_classes)} packets\n"
            msg += _table(("class", "packets", "bytes"), rows)
            if bad_flows:
                msg += "\n" + _flow_table(bad_flows)
            raise AssertionError(msg)

    def assert_only_flows(self, allowed: Iterable[FlowPattern], neighbor_discovery: bool = True) -> None:
        """Every flow matches one of ``allowed`` (flow_matcher's patterns);
        ``neighbor_discovery``: ICMPv6 neighbour discovery is allowed too
        (ARP is no flow). Fails listing every other flow with its bytes."""
        self._require_done()
        matchers = [flow_matcher(p) for p in allowed]
        bad = [f for f in self.flows if not any(m(f) for m in matchers)
               and not (neighbor_discovery and f.protocol == "icmpv6" and f.icmp_type in ND_TYPES)]
        if bad:
            raise AssertionError(f"{self.key}: {len(bad)} unexpected flow{'s' if len(bad) > 1 else ''}\n"
                                 + _flow_table(bad) + self._incomplete())
        if not self.flows_complete:
            raise AssertionError(f"{self.key}: cannot tell: {self._incomplete().strip()}")

    def assert_flow_count(self, pattern: FlowPattern, at_most: Optional[int] = None,
                          exactly: Optional[int] = None) -> None:
        """How many flows match ``pattern``: each connection attempt from a
        new port is a flow, so ``at_most`` bounds retries."""
        self._require_done()
        found = self.flows_matching(pattern)
        if (exactly is not None and len(found) != exactly) or (at_most is not None and len(found) > at_most):
            want = f"exactly {exactly}" if exactly is not None else f"at most {at_most}"
            raise AssertionError(f"{self.key}: {want} flows match {pattern!r}, got {len(found)}\n"
                                 + _flow_table(found) + self._incomplete())

    def _incomplete(self) -> str:
        return "" if self.flows_complete else (
            f"\n(the flow list is not complete: more than {FLOW_LIMIT} flows, or some left tcflow's flow table)")

    def _require_done(self) -> None:
        if not self.done:
            raise RuntimeError("the meter is still counting: assert after its with block")

    def report(self) -> str:
        """What the meter counted, as text: the classes that are not 0, and the flows."""
        rows = [(n, str(self.packets[n]), str(self.bytes[n])) for n in NAMES if self.packets[n] or self.bytes[n]]
        head = f"tcflow meter on {self.key} ({self.seconds:.2f} s)"
        if not self.done:
            return head + ": did not finish"
        out = head + "\n" + (_table(("class", "packets", "bytes"), rows) if rows else "no traffic")
        if self.flows:
            out += "\n" + _flow_table(self.flows)
        return out + self._incomplete()


def _flow(d: Mapping[str, Any]) -> Flow:
    return Flow(d["protocol"], d["family"], (d["local"]["address"], d["local"]["port"]),
                (d["remote"]["address"], d["remote"]["port"]), d["icmp_type"],
                d["ip_bytes"]["send"], d["ip_bytes"]["recv"], d["payload_bytes"]["send"], d["payload_bytes"]["recv"],
                d["packets"]["send"], d["packets"]["recv"])


def _minus(f: Flow, g: Flow) -> Flow:
    return Flow(f.protocol, f.family, f.local, f.remote, f.icmp_type, f.bytes_sent - g.bytes_sent,
                f.bytes_received - g.bytes_received, f.payload_sent - g.payload_sent,
                f.payload_received - g.payload_received, f.packets_sent - g.packets_sent,
                f.packets_received - g.packets_received)


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [head, *rows]]
    return "\n".join(lines)


def _flow_table(flows: Sequence[Flow]) -> str:
    rows = [(str(f), f"{f.packets_sent}", f"{f.bytes_sent}", f"{f.packets_received}", f"{f.bytes_received}")
            for f in flows]
    return _table(("flow (local <-> remote)", "pkts sent", "bytes sent", "pkts recv", "bytes recv"), rows)
