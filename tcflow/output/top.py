"""`tcflow top`: the busiest flows of the chosen interfaces, like iftop.

A ``View`` is fed one snapshot (taken with --flows) a tick and keeps what
iftop keeps: each flow's IP bytes over the last 40 s, so that a row shows its
2 s average each way and its 10 s and 40 s averages, and totals (sent,
received, both) with their cumulative bytes and peak. Filters (port, host
CIDR, protocol, interface/namespace/container) and the sort key are the
view's; counting is the engine's. Plain data in, text out.

Units: rates in bytes or bits a second (--units), sizes in bytes; prefixes
are SI (k = 1000), the same as everywhere in tcflow (output/table.py).
"""

from __future__ import annotations

import ipaddress
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Optional

from tcflow.model.classes import CLASSES
from tcflow.model.names import printable
from tcflow.model.snapshot import Snapshot

WINDOWS = (2.0, 10.0, 40.0)
SORTS = ("total", "recv", "sent", "10s", "40s", "bytes")
ECHO_TYPES = {"icmp": (8, 0), "icmpv6": (128, 129)}  # request, reply: one ping is one conversation
KEYS_HELP = "q quit · p pause · s/r/t sort sent/recv/total · h help"
HELP = [
    "keys: q quit, p pause (counting goes on), h this help",
    "      s, r, t: sort by sent, received, total (2 s)",
    "      any other key closes this help",
    "RECV, SENT: 2 s averages; 10s, 40s: both ways;",
    "TOTAL: bytes since start. Last lines: TX, RX and both,",
    "cumulative, peak (2 s) and 2/10/40 s averages.",
    "ping: one echo exchange (request and reply).",
    "No names are resolved: tcflow makes no DNS queries.",
]
IP_RECV_CLASSES = tuple(c.name for c in CLASSES if c.layer == "L3" and c.direction == "recv")
IP_SEND_CLASSES = tuple(c.name for c in CLASSES if c.layer == "L3" and c.direction == "send")


def endpoint(e: dict[str, Any]) -> str:
    addr, port = e["address"], e["port"]
    if port is None:
        return addr
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


@dataclass(frozen=True)
class Filters:
    """Which flows a view shows: all given conditions hold."""

    port: Optional[int] = None
    host: Optional[ipaddress.IPv4Network | ipaddress.IPv6Network] = None
    proto: Optional[str] = None        # tcp, udp, icmp (v4 or v6)
    where: Optional[str] = None        # an interface key, or its namespace or container part

    def active(self) -> bool:
        return any(v is not None for v in (self.port, self.host, self.proto))

    def keeps_interface(self, key: str) -> bool:
        return self.where is None or key == self.where or key.split("/")[0] == self.where

    def keeps(self, f: dict[str, Any]) -> bool:
        if self.port is not None and self.port not in (f["local"]["port"], f["remote"]["port"]):
            return False
        if self.proto is not None and not (f["protocol"] == self.proto
                                           or self.proto == "icmp" and f["protocol"] == "icmpv6"):
            return False
        if self.host is not None:
            try:
                addrs = [ipaddress.ip_address(f[s]["address"]) for s in ("local", "remote")]
            except ValueError:
                return False
            mapped = [a.ipv4_mapped if isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped else a for a in addrs]
            if not any(a.version == self.host.version and a in self.host for a in mapped):
                return False
        return True

    def text(self) -> str:
        parts = [f"port {self.port}" if self.port is not None else "", f"host {self.host}" if self.host else "",
                 self.proto or "", f"in {self.where}" if self.where else ""]
        return ", ".join(p for p in parts if p)


@dataclass
class Row:
    """One line: a flow (an ICMP echo exchange folded into one), with its
    cumulative IP bytes and the averages the view worked out."""

    where: str
    proto: str
    local: str
    remote: str
    recv: int
    send: int
    avg: dict[str, tuple[float, float]] = field(default_factory=dict)  # window -> (recv, send) bytes a second

    def rate(self, window: str = "2s") -> tuple[float, float]:
        return self.avg.get(window, (0.0, 0.0))

    def as_dict(self) -> dict[str, Any]:
        proto = self.proto.split("/")[0].replace("ping6", "icmpv6").replace("icmp6", "icmpv6").replace("ping", "icmp")
        return {"interface": self.where, "protocol": proto, "conversation": self.proto,
                "local": self.local, "remote": self.remote, "ip_bytes": {"recv": self.recv, "send": self.send},
                "avg": {w: {"recv": round(r, 1), "send": round(s, 1)} for w, (r, s) in self.avg.items()}}


def _fold(where: str, f: dict[str, Any]) -> tuple[tuple[Any, ...], str, str, str]:
    """The identity of the row a flow belongs to, and its protocol text and ends."""
    proto, itype = f["protocol"], f["icmp_type"]
    local, remote = endpoint(f["local"]), endpoint(f["remote"])
    if itype is not None and itype in ECHO_TYPES.get(proto, ()):
        name = "ping" if proto == "icmp" else "ping6"
        return (where, name, local, remote), name, local, remote
    text = f"{proto.replace('icmpv6', 'icmp6')}/{itype}" if itype is not None else proto
    return (where, text, local, remote), text, local, remote


class History:
    """Cumulative (recv, send) samples of one row over the last 40 s."""

    __slots__ = ("samples",)

    def __init__(self, t0: float, recv: int = 0, send: int = 0):
        self.samples: deque[tuple[float, int, int]] = deque([(t0, recv, send)])

    def add(self, t: float, recv: int, send: int) -> None:
        last = self.samples[-1]
        if recv < last[1] or send < last[2]:  # the flow was evicted and came back: counts anew
            self.samples = deque([(last[0], 0, 0)])
        self.samples.append((t, recv, send))
        while len(self.samples) > 2 and self.samples[1][0] <= t - WINDOWS[-1]:
            self.samples.popleft()

    def average(self, t: float, window: float, since: float) -> tuple[float, float]:
        """Bytes a second over the last ``window`` (or since the view began)."""
        span = min(window, t - since)
        if span <= 0:
            return 0.0, 0.0
        base = self.samples[0]
        for s in self.samples:
            if s[0] <= t - window + 1e-6:
                base = s
            else:
                break
        now = self.samples[-1]
        return (now[1] - base[1]) / span, (now[2] - base[2]) / span


class View:
    """What `tcflow top` shows, tick after tick."""

    def __init__(self, filters: Filters = Filters(), sort: str = "total", units: str = "bytes"):
        self.filters, self.sort, self.units = filters, sort, units
        self.paused = False
        self.help = False
        self.started: Optional[float] = None
        self.rows: list[Row] = []
        self.flows: dict[tuple[Any, ...], History] = {}
        self.totals = History(0.0)
        self.peak = [0.0, 0.0, 0.0]  # recv, send, both: the highest 2 s average seen
        self.snap: Optional[Snapshot] = None
        self.last_t = 0.0
        self.interfaces: list[str] = []
        self.names: dict[str, str] = {}  # interface key -> how WHERE shows it

    def update(self, snap: Snapshot) -> None:
        """Take the next snapshot (a paused view still learns, and shows the
        last screen it drew)."""
        t = snap.monotonic
        first = self.started is None
        if first:  # what was counted before the view began is the baseline, not a rate
            self.started = self.last_t = t
        self.interfaces = [k for k in snap.interfaces if self.filters.keeps_interface(k)]
        self.names = short_names(self.interfaces)
        merged: dict[tuple[Any, ...], Row] = {}
        for key in self.interfaces:
            doc = (snap.flows or {}).get(key)
            for f in (doc or {}).get("top", []):
                if not self.filters.keeps(f):
                    continue
                ident, proto, local, remote = _fold(key, f)
                row = merged.get(ident)
                if row is None:
                    row = merged[ident] = Row(key, proto, local, remote, 0, 0)
                row.recv += f["ip_bytes"]["recv"]
                row.send += f["ip_bytes"]["send"]
        assert self.started is not None
        for ident, row in merged.items():
            h = self.flows.get(ident)
            if h is None:  # new since the last tick: it began counting from 0 after it
                h = self.flows[ident] = History(t, row.recv, row.send) if first else History(self.last_t)
            h.add(t, row.recv, row.send)
            row.avg = {f"{w:g}s": h.average(t, w, self.started) for w in WINDOWS}
        for ident in [i for i in self.flows if i not in merged]:
            del self.flows[ident]  # gone (idle, evicted, filtered): bounded by the table
        if self.filters.active():
            recv, send = sum(r.recv for r in merged.values()), sum(r.send for r in merged.values())
        else:  # the interfaces' own totals: exact, also for what no flow holds
            recv = sum(snap.interfaces[k].bytes[n] for k in self.interfaces for n in IP_RECV_CLASSES)
            send = sum(snap.interfaces[k].bytes[n] for k in self.interfaces for n in IP_SEND_CLASSES)
        if first:
            self.totals = History(t, recv, send)
        self.totals.add(t, recv, send)
        r2, s2 = self.totals.average(t, WINDOWS[0], self.started)
        self.peak = [max(self.peak[0], r2), max(self.peak[1], s2), max(self.peak[2], r2 + s2)]
        self.last_t = t
        if not self.paused:
            self.snap = snap
            self.rows = sorted(merged.values(), key=self._order, reverse=True)

    def _order(self, r: Row) -> tuple[float, ...]:
        recv, send = r.rate("2s")
        by = {"total": recv + send, "recv": recv, "sent": send, "10s": sum(r.rate("10s")),
              "40s": sum(r.rate("40s")), "bytes": float(r.recv + r.send)}[self.sort]
        return by, float(r.recv + r.send)

    def key(self, ch: str) -> bool:
        """A key pressed on the terminal; False to quit."""
        if self.help:
            self.help = False
            return ch != "q"
        if ch in ("q", "Q"):
            return False
        if ch == "p":
            self.paused = not self.paused
        elif ch in ("s", "r", "t"):
            self.sort = {"s": "sent", "r": "recv", "t": "total"}[ch]
            self.rows.sort(key=self._order, reverse=True)
        elif ch in ("h", "?"):
            self.help = True
        return True

    # -- text ---------------------------------------------------------------
    def unit(self) -> str:
        return "bit/s" if self.units == "bits" else "B/s"

    def scale(self) -> int:
        return 8 if self.units == "bits" else 1

    def totals_lines(self, width: int) -> list[str]:
        """iftop's three lines: cumulative, peak and the 2/10/40 s averages."""
        if self.started is None:
            return []
        t = self.last_t
        avgs = [self.totals.average(t, w, self.started) for w in WINDOWS]
        last = self.totals.samples[-1]
        k = self.scale()
        out = []
        for label, i in (("TX", 1), ("RX", 0), ("TOTAL", 2)):
            cum = last[1] + last[2] if i == 2 else last[1 + (i == 1)]
            rates = [a[0] + a[1] if i == 2 else a[i] for a in avgs]
            head = f"{label:<5} cum {compact(cum):>5}B  peak {compact(self.peak[i] * k):>5}"
            tail = "  " + "  ".join(f"{w:g}s {compact(r * k):>5}" for w, r in zip(WINDOWS, rates, strict=True))
            tail += f"  {'b/s' if self.units == 'bits' else 'B/s'}"
            if len(head) + len(tail) > width:
                head, tail = head.replace("  ", " "), tail.replace("  ", " ")
            out.append((head + tail)[:width])
        return out

    def table(self, width: int, limit: int) -> list[str]:
        """The header (two lines: names, then units) and one line per row,
        in ``width`` columns. The numbers are never cut: the endpoints (and
        WHERE) shrink first, then the 40 s and 10 s columns go."""
        nw = 5
        multi = len(self.interfaces) > 1
        numbers = ["RECV", "SENT", "10s", "40s", "TOTAL"]
        while True:
            proto_w = max([4 if width < 70 else 5] + [len(r.proto) for r in self.rows[:limit]])
            if width < 70:
                proto_w = min(proto_w, 5)  # icmp6/143 shows as ~/143
            fixed = proto_w + (nw + 1) * len(numbers)
            room = width - fixed - 2 - (1 if multi else 0)
            if room >= (22 if multi else 15) or len(numbers) == 3:
                break
            numbers.remove("40s" if "40s" in numbers else "10s")
        shown_rows = self.rows[:max(0, limit - 2)]
        who_n = max([5] + [len(self.names.get(k, k)) for k in self.interfaces])
        end_n = max([5] + [len(r.local) for r in shown_rows])
        rem_n = max([6] + [len(r.remote) for r in shown_rows])
        who_w = min(who_n, max(8, room // 3)) if multi else 0
        room -= who_w
        end_w = max(6, min(end_n, 40, room * 2 // 5 if end_n + rem_n > room else end_n))
        rem_w = max(8, min(room - end_w, 46))
        head = (f"{'WHERE':<{who_w}} " if multi else "") + f"{'PROTO'[:proto_w]:<{proto_w}} {'LOCAL':<{end_w}} " \
            f"{'REMOTE':<{rem_w}}" + "".join(f" {n:>{nw}}" for n in numbers)
        unit = "b/s" if self.units == "bits" else "B/s"
        units = " " * (len(head) - (nw + 1) * len(numbers)) + \
            "".join(f" {('B' if n == 'TOTAL' else unit):>{nw}}" for n in numbers)
        lines = [head[:width], units[:width]]
        k = self.scale()
        for r in shown_rows:
            vals = {"RECV": r.rate("2s")[0] * k, "SENT": r.rate("2s")[1] * k, "10s": sum(r.rate("10s")) * k,
                    "40s": sum(r.rate("40s")) * k, "TOTAL": float(r.recv + r.send)}
            where = f"{squeeze_key(printable(self.names.get(r.where, r.where)), who_w):<{who_w}} " if multi else ""
            proto = r.proto if len(r.proto) <= proto_w else "~" + r.proto[len(r.proto) - proto_w + 1:]
            line = (f"{where}{proto:<{proto_w}} {shrink_end(r.local, end_w):<{end_w}} "
                    f"{shrink_end(r.remote, rem_w):<{rem_w}}" + "".join(f" {compact(vals[n]):>{nw}}"
                                                                        for n in numbers))
            lines.append(line[:width])
        if not self.rows:
            lines.append("(no active flows)" if self.interfaces else "(no interface matches the filters)")
        return lines

    def screen(self, width: int, height: int, kept: Optional[list[str]] = None) -> str:
        """One terminal screen: title, table, totals, notices, keys."""
        kept = list(kept or [])
        width = max(width, 40)
        snap = self.snap
        n = len(self.interfaces)
        when = time.strftime("%H:%M:%S", time.localtime(snap.time)) if snap else "--:--:--"
        state = "PAUSED · " if self.paused else ""
        filt = self.filters.text()
        title = f"tcflow top · {when} · {n} interface{'s' if n != 1 else ''} · {state}" \
            f"{summary(snap) if snap else ''}{' · ' + filt if filt else ''} · sort {self.sort}"
        lines = [title[:width]]
        foot = self.totals_lines(width)
        bottom = [*foot, *kept, KEYS_HELP[:width]]
        if self.help:
            body = [h[:width] for h in HELP]
        else:
            body = self.table(width, max(3, height - 1 - len(bottom) - 1))
        room = max(0, height - 1 - len(bottom) - 1)
        lines += body[:room]
        lines += [""] * (height - len(lines) - len(bottom))
        lines += bottom
        return "\n".join(lines[:height])

    def document(self, top: int) -> dict[str, Any]:
        """One line of `top --json`: the rows (busiest first) and the totals."""
        t = self.last_t
        last = self.totals.samples[-1]
        avgs = {f"{w:g}s": self.totals.average(t, w, self.started or t) for w in WINDOWS}
        return {"time": round(self.snap.time, 6) if self.snap else None, "sort": self.sort,
                "interfaces": self.interfaces, "filters": self.filters.text() or None,
                "totals": {"ip_bytes": {"recv": last[1], "send": last[2]},
                           "peak": {"recv": round(self.peak[0], 1), "send": round(self.peak[1], 1)},
                           "avg": {w: {"recv": round(r, 1), "send": round(s, 1)} for w, (r, s) in avgs.items()}},
                "flows": [r.as_dict() for r in self.rows[:top]]}


def summary(snap: Snapshot) -> str:
    active = evicted = overflow = 0
    for doc in (snap.flows or {}).values():
        active += doc["active"]
        evicted += doc["evictions"]
        overflow += doc["overflow"]["packets"]["recv"] + doc["overflow"]["packets"]["send"]
    text = f"{active} flows, {evicted} evicted"
    if overflow:
        text += f", {overflow} packets in overflow (table full: raise --flow-entries)"
    return text


def compact(n: float) -> str:
    """At most 5 characters: 999, 1.2k, 165k, 12.0M, 1.5T."""
    for prefix in ("", "k", "M", "G", "T"):
        if abs(n) < 999.5 or prefix == "T":
            if prefix == "":
                return f"{n:.0f}"
            return f"{n:.1f}{prefix}" if abs(n) < 99.95 else f"{n:.0f}{prefix}"
        n /= 1000
    return str(n)  # pragma: no cover


def shrink_end(text: str, w: int) -> str:
    """An endpoint in ``w`` characters: the port stays, the address loses its start."""
    if len(text) <= w:
        return text
    if text.startswith("[") and "]:" in text:  # [IPv6]:port
        addr, port = text[1:].split("]:", 1)
        keep = w - len(port) - 4
        return f"[~{addr[len(addr) - keep:]}]:{port}" if keep > 0 else ":" + port if len(port) < w else "~"
    addr, sep, port = text.rpartition(":")
    if sep and port.isdigit() and len(port) + 1 <= w:
        keep = w - len(port) - 2
        return "~" + addr[len(addr) - keep:] + ":" + port if keep > 0 else ":" + port
    return "~" + text[len(text) - w + 1:]


def short_names(keys: list[str]) -> dict[str, str]:
    """How WHERE names each interface: its key, less the start that every
    namespace (or container) name shares (tcft30e7-5feb5eba/tcfa and
    tcft30e7-30aed4ce/tcfa: ~5feb5eba/tcfa and ~30aed4ce/tcfa)."""
    spaces = [k.partition("/")[0] for k in keys if "/" in k]
    if len(keys) < 2 or len(spaces) != len(keys):
        return {k: k for k in keys}
    n = 0
    while all(len(s) > n + 1 and s[n] == spaces[0][n] for s in spaces):
        n += 1
    return {k: ("~" + k[n:] if n >= 4 else k) for k in keys}


def squeeze_key(key: str, w: int) -> str:
    """An interface key in ``w`` characters; the namespace (or container)
    part goes first, from its start: ns1/dup0 and ns2/dup0 stay apart (ns1/d~,
    ns2/d~), as do ~5feb5eba/tcfa and ~30aed4ce/tcfa (~5feb5~, ~30aed~)."""
    if len(key) <= w or "/" not in key:
        return squeeze(key, w)
    ns, _, iface = key.partition("/")
    if len(ns) + 3 <= w:
        return f"{ns}/{iface[:w - len(ns) - 2]}~"
    return ns[:w - 1] + "~"


def squeeze(text: str, w: int) -> str:
    """A name in ``w`` characters: its start and its end stay (ns1/veth0 vs ns2/veth0)."""
    if len(text) <= w:
        return text
    head = (w - 1) // 2
    return text[:head] + "~" + text[len(text) - (w - 1 - head):]
