"""Render snapshots for a terminal: the detailed class table of one
interface, or one line per interface, busiest first, when there are several.
Plain data in, text out; 80 columns.

Units, here and everywhere in tcflow (CLI, top, dashboard, doctor): SI
prefixes, powers of 1000 (k, M, G, T); sizes in bytes (B); rates in bytes or
bits a second (B/s, bit/s; --units), packets as counts (pkt, pkt/s)."""

from __future__ import annotations

import time
from typing import Optional

from tcflow.model.classes import CLASSES
from tcflow.model.snapshot import Hooks, InterfaceCounters, Snapshot

UNITS = ("bytes", "bits")


def human(n: float, unit: str = "B") -> str:
    for prefix in ("", "k", "M", "G", "T"):
        if abs(n) < 1000 or prefix == "T":
            return f"{n:.0f} {prefix}{unit}" if prefix == "" else f"{n:.1f} {prefix}{unit}"
        n /= 1000
    return f"{n} {unit}"  # pragma: no cover


# One row per class stem (the 14 of the seed design, then IP bytes received),
# IPv4 and IPv6 side by side; titles from classes.py.
ROWS = [(c.title, c.stem) for c in CLASSES if c.layer is not None and c.family == "ipv4"]
APART = [c for c in CLASSES if c.layer is None]


def hooks_text(hooks: Hooks) -> str:
    recv = f"recv: {hooks.ingress}"
    if hooks.xdp_mode:
        recv += f" ({hooks.xdp_mode})"
    text = f"{recv}, send: {hooks.egress}" + (", pinned" if hooks.pinned else "")
    return text if hooks.counting else text + "; NOT COUNTING: its programs were removed from its hooks, its counts " \
        "are frozen"


def rate_text(bytes_per_s: float, units: str = "bytes") -> str:
    return human(bytes_per_s * 8, "bit/s") if units == "bits" else human(bytes_per_s, "B/s")


def render_interface(ic: InterfaceCounters, rates: Optional[dict[str, float]] = None, units: str = "bytes",
                     packet_rates: Optional[dict[str, float]] = None) -> str:
    """One interface's class table: bytes by class and family, rates when
    there was a snapshot before (none for `tcflow show`), then the totals
    in and out, bytes and packets."""
    hooks = hooks_text(ic.hooks)
    title = f"{ic.key} (ifindex {ic.ifindex}; {hooks})"
    if len(title) <= 80:
        lines = [title]
    else:  # a long namespace name: the hooks get a line of their own
        name = f"{ic.key} (ifindex {ic.ifindex})"
        lines = [name if len(name) <= 80 else name[:79] + "~", f"  {hooks}"]
    head = f"  {'class':<24}{'IPv4':>13}{'IPv6':>13}"
    lines.append(head + (f"{'IPv4/s':>14}{'IPv6/s':>14}" if rates else ""))
    for label, stem in ROWS:
        v4, v6 = ic.bytes[f"{stem}_V4"], ic.bytes[f"{stem}_V6"]
        line = f"  {label:<24}{human(v4):>13}{human(v6):>13}"
        if rates:
            line += f"{rate_text(rates[f'{stem}_V4'], units):>14}{rate_text(rates[f'{stem}_V6'], units):>14}"
        lines.append(line)
    lines.append(f"  {'IP total':<24}{'bytes':>13}{'packets':>13}"
                 + (f"{'rate':>14}{'packets/s':>14}" if rates else ""))
    for label, names in (("received", IP_RECV), ("sent", IP_SEND)):
        line = f"  {label:<24}{human(sum(ic.bytes[n] for n in names)):>13}" \
               f"{count_text(sum(ic.packets[n] for n in names)):>13}"
        if rates:
            pps = sum((packet_rates or {}).get(n, 0.0) for n in names)
            line += f"{rate_text(sum(rates[n] for n in names), units):>14}{count_text(pps) + '/s':>14}"
        lines.append(line)
    totals: dict[str, int] = {}
    for c in APART:
        totals[str(c.reason)] = totals.get(str(c.reason), 0) + ic.bytes[c.name]
    apart = ", ".join(f"{reason.replace('_', '-')} {human(n)}" for reason, n in totals.items())
    lines.append(f"  not counted above: {apart}")
    return "\n".join(lines)


def count_text(n: float) -> str:
    """A packet count or rate: 999, 1.2 k, 45.1 M."""
    return human(n, "").rstrip() if n >= 1000 else f"{n:.0f}"


IP_RECV = [c.name for c in CLASSES if c.layer == "L3" and c.direction == "recv"]
IP_SEND = [c.name for c in CLASSES if c.layer == "L3" and c.direction == "send"]
SUMMARY_HEAD = (f"{'INTERFACE':<20} {'IP RECV/s':>12} {'IP SEND/s':>12} {'PKT/s':>7} {'RECEIVED':>9} {'SENT':>9} "
                f"{'HOOK':>4}")
PINNED_LEGEND = "HOOK: recv on xdp or tc (send: tc); * pinned: it counts on after tcflow exits"
GONE_LEGEND = "gone: pinned, but its programs were removed: frozen counts (`tcflow detach --stale` forgets it)"


def summary(snap: Snapshot, previous: Optional[Snapshot] = None, units: str = "bytes",
            rows: Optional[int] = None) -> list[str]:
    """A line per interface, busiest first (IP bytes a second, both ways), at
    most ``rows`` of them plus a line that says how many more there are."""
    rates = snap.rates(previous) if previous else {}
    pps = snap.rates(previous, "packets") if previous else {}

    def load(key: str) -> float:
        r = rates.get(key)
        return sum(r[n] for n in IP_RECV + IP_SEND) if r else 0.0

    keys = sorted(snap.interfaces, key=lambda k: (-load(k), k))
    pinned = any(ic.hooks.pinned for ic in snap.interfaces.values())
    if rows is not None and pinned:
        rows -= 1  # the legend's line
    shown_keys = keys if rows is None or len(keys) <= rows else keys[:max(0, rows - 1)]
    lines = [SUMMARY_HEAD]
    for key in shown_keys:
        ic, r = snap.interfaces[key], rates.get(key)
        name = key if len(key) <= 20 else key[:19] + "~"
        rr = rate_text(sum(r[n] for n in IP_RECV), units) if r else "-"
        rs = rate_text(sum(r[n] for n in IP_SEND), units) if r else "-"
        p = pps.get(key)
        pk = count_text(sum(p[n] for n in IP_RECV + IP_SEND)) if p else "-"
        total_r, total_s = sum(ic.bytes[n] for n in IP_RECV), sum(ic.bytes[n] for n in IP_SEND)
        hook = ic.hooks.ingress + ("*" if ic.hooks.pinned else "") if ic.hooks.counting else "gone"
        lines.append(f"{name:<20} {rr:>12} {rs:>12} {pk:>7} {human(total_r):>9} {human(total_s):>9} {hook:>4}")
    if len(shown_keys) < len(keys):
        lines.append(f"... and {len(keys) - len(shown_keys)} more, quieter (--json lists all)")
    if pinned:
        lines.append(PINNED_LEGEND)
    if not all(ic.hooks.counting for ic in snap.interfaces.values()):
        lines.append(GONE_LEGEND)
    return lines


def render(snap: Snapshot, previous: Optional[Snapshot] = None, units: str = "bytes",
           rows: Optional[int] = None) -> str:
    """One interface: its class table. Several: a line each (summary). Rates
    since ``previous`` when given; at most ``rows`` lines with several."""
    if len(snap.interfaces) <= 1:
        return render_all(snap, previous, units)
    return "\n".join(summary(snap, previous, units, rows))


def render_all(snap: Snapshot, previous: Optional[Snapshot] = None, units: str = "bytes") -> str:
    """Every interface's class table (``tcflow show``: everything, once)."""
    if not snap.interfaces:
        return "(no interface attached)"
    rates = snap.rates(previous) if previous else {}
    pps = snap.rates(previous, "packets") if previous else {}
    return "\n\n".join(render_interface(ic, rates.get(key), units, pps.get(key))
                       for key, ic in snap.interfaces.items())


def screen(snap: Snapshot, previous: Optional[Snapshot], interval: float, units: str, width: int, height: int,
           notices: list[str]) -> str:
    """A whole terminal screen: the header, the view cut to fit, and the last
    notices at the bottom (they stay until newer ones push them out)."""
    notes = [n if len(n) <= width else n[:width - 1] + "~" for n in notices[-3:]]
    room = max(3, height - 2 - (len(notes) + 1 if notes else 0) - 1)
    body = render(snap, previous, units, rows=room - 1).splitlines()[:room]
    lines = [header(snap, interval), "", *body]
    if notes:
        lines += ["", *notes]
    return "\n".join(line[:width] for line in lines[:height])


def header(snap: Snapshot, interval: float, footer: str = "Ctrl-C stops") -> str:
    """The line above the live table: when, how often, how to stop."""
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(snap.time))
    n = len(snap.interfaces)
    text = f"tcflow  {when}  {n} interface{'s' if n != 1 else ''}  every {interval:g} s  {footer}"
    return text[:80]
