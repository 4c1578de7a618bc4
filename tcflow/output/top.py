"""`tcflow top`: the busiest flows of the chosen interfaces, one line each,
like iftop. Plain data in (a snapshot taken with --flows), text out."""

from __future__ import annotations

import time
from typing import Any, Optional

from tcflow.model.names import printable
from tcflow.model.snapshot import Snapshot


def endpoint(e: dict[str, Any]) -> str:
    addr, port = e["address"], e["port"]
    if port is None:
        return addr
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def rows(snap: Snapshot) -> list[tuple[str, dict[str, Any]]]:
    """(who, flow) for every listed flow of every interface, busiest first.
    ``who`` is the interface's key in /traffic: NETNS/IFACE (a container's
    namespace is named for the container), or IFACE in tcflow's own."""
    out = []
    for key in snap.interfaces:
        doc = (snap.flows or {}).get(key)
        if doc:
            out += [(key, f) for f in doc["top"]]
    out.sort(key=lambda r: (r[1]["rate"]["recv"] + r[1]["rate"]["send"],
                            r[1]["ip_bytes"]["recv"] + r[1]["ip_bytes"]["send"]), reverse=True)
    return out


def proto_text(f: dict[str, Any]) -> str:
    if f["icmp_type"] is not None:
        return f"{f['protocol']}/{f['icmp_type']}"
    return f["protocol"]


def summary(snap: Snapshot) -> str:
    active = evicted = overflow = 0
    full = []
    for key, doc in (snap.flows or {}).items():
        active += doc["active"]
        evicted += doc["evictions"]
        overflow += doc["overflow"]["packets"]["recv"] + doc["overflow"]["packets"]["send"]
        table = doc["table"]
        if table["entries"] >= table["capacity"]:
            full.append(key)
    text = f"{active} flows, {evicted} evicted"
    if overflow:
        text += f", {overflow} packets in overflow (table full: raise --flow-entries)"
    return text


def screen(snap: Snapshot, units: str, width: int, height: int, kept: Optional[list[str]] = None) -> str:
    """One screen: a title, a header, as many flows as fit, the notices last."""
    kept = kept or []
    width = max(width, 60)
    title = f"tcflow top · {len(snap.interfaces)} interface{'s' if len(snap.interfaces) != 1 else ''} · " \
            f"{summary(snap)} · {time.strftime('%H:%M:%S', time.localtime(snap.time))}"
    lines = [title[:width]]
    lines += table(snap, units, width, max(1, height - 2 - len(kept)))
    lines += kept
    return "\n".join(lines)


def compact(n: float) -> str:
    """Short: 999, 1.2K, 164.5K, 12.0M (6 characters below 1,000 T)."""
    for prefix in ("", "K", "M", "G", "T"):
        if abs(n) < 999.95 or prefix == "T":
            return f"{n:.0f}" if prefix == "" else f"{n:.1f}{prefix}"
        n /= 1000
    return str(n)  # pragma: no cover


def table(snap: Snapshot, units: str, width: int, limit: int) -> list[str]:
    """A header and one line per flow, busiest first, in ``width`` columns.
    WHERE only when more than one interface is shown; the endpoints take
    what the other columns leave."""
    unit = "bit/s" if units == "bits" else "B/s"
    scale = 8 if units == "bits" else 1
    rate_w, total_w, proto_w = 7, 7, 10
    who_w = 14 if len(snap.interfaces) > 1 else 0
    fixed = proto_w + 2 * rate_w + total_w + (who_w + 1 if who_w else 0) + 5
    ends_w = max(24, width - fixed)
    end_w = min(ends_w // 2, 47)
    rem_w = min(ends_w - end_w, 47)
    who = f"{'WHERE':<{who_w}} " if who_w else ""
    head = (f"{who}{'PROTO':<{proto_w}} {'LOCAL':<{end_w}} {'REMOTE':<{rem_w}}"
            f" {'RECV':>{rate_w}} {'SENT':>{rate_w}} {'TOTAL':>{total_w}}")
    lines = [head[:width], f"{'':<{len(head) - 2 * rate_w - total_w - 2}}{unit:>{2 * rate_w + 1}} {'bytes':>{total_w}}"
             [:width]]
    listed = rows(snap)
    for name, f in listed[:max(1, limit - 2)]:
        total = f["ip_bytes"]["recv"] + f["ip_bytes"]["send"]
        where = f"{_fit(printable(name), who_w):<{who_w}} " if who_w else ""
        line = (f"{where}{proto_text(f):<{proto_w}} "
                f"{_fit(endpoint(f['local']), end_w):<{end_w}} {_fit(endpoint(f['remote']), rem_w):<{rem_w}}"
                f" {compact(f['rate']['recv'] * scale):>{rate_w}} {compact(f['rate']['send'] * scale):>{rate_w}}"
                f" {compact(total):>{total_w}}")
        lines.append(line[:width])
    if not listed:
        lines.append("(no active flows)")
    return lines


def _fit(text: str, w: int) -> str:
    return text if len(text) <= w else text[:w - 1] + "~"
