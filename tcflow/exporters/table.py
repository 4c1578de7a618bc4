"""Render a Snapshot as an 80-column table. Plain data in, text out."""

from __future__ import annotations

from typing import Optional

from ..counters import InterfaceCounters, Snapshot


def human(n: float, unit: str = "B") -> str:
    for prefix in ("", "K", "M", "G", "T"):
        if abs(n) < 1000 or prefix == "T":
            return f"{n:.0f} {prefix}{unit}" if prefix == "" else f"{n:.1f} {prefix}{unit}"
        n /= 1000
    return f"{n} {unit}"  # pragma: no cover


ROWS = [("TCP payload sent", "L4_TCP_SEND"), ("TCP payload recv", "L4_TCP_RECV"),
        ("UDP payload sent", "L4_UDP_SEND"), ("UDP payload recv", "L4_UDP_RECV"),
        ("IP bytes sent, TCP", "L3_TCP_SEND"), ("IP bytes sent, UDP", "L3_UDP_SEND"),
        ("IP bytes sent, other", "L3_RAW_SEND")]


def render_interface(ic: InterfaceCounters, rates: Optional[dict[str, float]] = None) -> str:
    hooks = f"recv: {ic.hooks.get('ingress')}"
    if ic.hooks.get("xdp_mode"):
        hooks += f" ({ic.hooks['xdp_mode']})"
    lines = [f"{ic.key} (ifindex {ic.ifindex}, {hooks}, send: tc)",
             f"  {'class':<22}{'IPv4':>13}{'IPv6':>13}{'IPv4/s':>14}{'IPv6/s':>14}"]
    for label, stem in ROWS:
        v4, v6 = ic.bytes[f"{stem}_V4"], ic.bytes[f"{stem}_V6"]
        r4 = human(rates[f"{stem}_V4"], "B/s") if rates else "-"
        r6 = human(rates[f"{stem}_V6"], "B/s") if rates else "-"
        lines.append(f"  {label:<22}{human(v4):>13}{human(v6):>13}{r4:>14}{r6:>14}")
    apart = ", ".join(f"{k.lower()} {human(ic.bytes[k + '_RECV'] + ic.bytes[k + '_SEND'])}"
                      for k in ("OTHER", "LOCAL", "MALFORMED"))
    lines.append(f"  not counted above: {apart}")
    return "\n".join(lines)


def render(snap: Snapshot, previous: Optional[Snapshot] = None) -> str:
    rates = snap.rates(previous) if previous else {}
    return "\n\n".join(render_interface(ic, rates.get(key)) for key, ic in snap.interfaces.items())
