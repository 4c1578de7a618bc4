"""Render a Snapshot as an 80-column table. Plain data in, text out."""

from __future__ import annotations

import time
from typing import Optional

from ..classes import CLASSES
from ..snapshot import Hooks, InterfaceCounters, Snapshot


def human(n: float, unit: str = "B") -> str:
    for prefix in ("", "K", "M", "G", "T"):
        if abs(n) < 1000 or prefix == "T":
            return f"{n:.0f} {prefix}{unit}" if prefix == "" else f"{n:.1f} {prefix}{unit}"
        n /= 1000
    return f"{n} {unit}"  # pragma: no cover


# One row per seed class stem, IPv4 and IPv6 side by side; titles from classes.py.
ROWS = [(c.title, c.stem) for c in CLASSES if c.seed and c.family == "ipv4"]
APART = [c for c in CLASSES if c.layer is None]


def hooks_text(hooks: Hooks) -> str:
    recv = f"recv: {hooks.ingress}"
    if hooks.xdp_mode:
        recv += f" ({hooks.xdp_mode})"
    return f"{recv}, send: {hooks.egress}" + (", pinned" if hooks.pinned else "")


def render_interface(ic: InterfaceCounters, rates: Optional[dict[str, float]] = None) -> str:
    hooks = hooks_text(ic.hooks)
    title = f"{ic.key} (ifindex {ic.ifindex}; {hooks})"
    if len(title) <= 80:
        lines = [title]
    else:  # a long namespace name: the hooks get a line of their own
        name = f"{ic.key} (ifindex {ic.ifindex})"
        lines = [name if len(name) <= 80 else name[:79] + "~", f"  {hooks}"]
    lines.append(f"  {'class':<22}{'IPv4':>13}{'IPv6':>13}{'IPv4/s':>14}{'IPv6/s':>14}")
    for label, stem in ROWS:
        v4, v6 = ic.bytes[f"{stem}_V4"], ic.bytes[f"{stem}_V6"]
        r4 = human(rates[f"{stem}_V4"], "B/s") if rates else "-"
        r6 = human(rates[f"{stem}_V6"], "B/s") if rates else "-"
        lines.append(f"  {label:<22}{human(v4):>13}{human(v6):>13}{r4:>14}{r6:>14}")
    totals: dict[str, int] = {}
    for c in APART:
        totals[str(c.reason)] = totals.get(str(c.reason), 0) + ic.bytes[c.name]
    apart = ", ".join(f"{reason.replace('_', '-')} {human(n)}" for reason, n in totals.items())
    lines.append(f"  not counted above: {apart}")
    return "\n".join(lines)


def render(snap: Snapshot, previous: Optional[Snapshot] = None) -> str:
    """Every interface of ``snap``; rates since ``previous`` when given."""
    rates = snap.rates(previous) if previous else {}
    if not snap.interfaces:
        return "(no interface attached)"
    return "\n\n".join(render_interface(ic, rates.get(key)) for key, ic in snap.interfaces.items())


def header(snap: Snapshot, interval: float, footer: str = "Ctrl-C stops") -> str:
    """The line above the live table: when, how often, how to stop."""
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(snap.time))
    n = len(snap.interfaces)
    text = f"tcflow  {when}  {n} interface{'s' if n != 1 else ''}  every {interval:g} s  {footer}"
    return text[:80]
