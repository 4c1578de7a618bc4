"""Flow types: plain data for what `--flows` reports (engine/flows.py reads
the maps and makes them), and the sum that makes an interface whole:
flows + evicted + overflow + unattributed = its classes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

from tcflow.model.classes import BY_NAME, NAMES

PROTO_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6"}
_INDEX = {n: i for i, n in enumerate(NAMES)}


@dataclass
class Counts:
    """IP bytes, payload bytes and packets, received and sent."""

    ip_recv: int = 0
    ip_send: int = 0
    payload_recv: int = 0
    payload_send: int = 0
    packets_recv: int = 0
    packets_send: int = 0

    def add(self, other: "Counts") -> None:
        self.ip_recv += other.ip_recv
        self.ip_send += other.ip_send
        self.payload_recv += other.payload_recv
        self.payload_send += other.payload_send
        self.packets_recv += other.packets_recv
        self.packets_send += other.packets_send

    @property
    def packets(self) -> int:
        return self.packets_recv + self.packets_send

    def as_dict(self) -> dict[str, dict[str, int]]:
        return {"ip_bytes": {"recv": self.ip_recv, "send": self.ip_send},
                "payload_bytes": {"recv": self.payload_recv, "send": self.payload_send},
                "packets": {"recv": self.packets_recv, "send": self.packets_send}}


@dataclass
class Flow:
    """One five-tuple seen from one interface. ``local`` is the interface's
    own side (the source of what it sent, the destination of what it
    received); ``icmp_type`` for ICMP and ICMPv6, whose ports are None."""

    slot: int
    proto: int
    local: tuple[str, Optional[int]]
    remote: tuple[str, Optional[int]]
    icmp_type: Optional[int]
    family: str                   # as the classes count it: an IPv4-mapped address is ipv4
    counts: Counts
    rate_recv: float = 0.0        # IP bytes a second over the last tick
    rate_send: float = 0.0

    @property
    def rate(self) -> float:
        return self.rate_recv + self.rate_send

    def as_dict(self) -> dict[str, Any]:
        return {"protocol": PROTO_NAMES.get(self.proto, str(self.proto)), "protocol_number": self.proto,
                "family": self.family, "local": {"address": self.local[0], "port": self.local[1]},
                "remote": {"address": self.remote[0], "port": self.remote[1]}, "icmp_type": self.icmp_type,
                **self.counts.as_dict(),
                "rate": {"recv": round(self.rate_recv, 1), "send": round(self.rate_send, 1)}}


@dataclass
class SlotFlows:
    """One interface's flows: ``top`` by rate (then by bytes), and the totals
    that make the sum whole."""

    active: int
    top: list[Flow]
    flows: Counts
    evicted: Counts
    overflow: Counts
    evictions: int
    capacity: int
    table_entries: int
    age_s: float = 0.0  # how old the read of the table is (serve shares the loop's: at most FLOWS_SHARED_S)

    def as_dict(self, unattributed: Optional[dict[str, int]] = None) -> dict[str, Any]:
        return {"active": self.active, "evictions": self.evictions, "table": {"entries": self.table_entries,
                                                                             "capacity": self.capacity},
                "read_age_s": round(self.age_s, 3),
                "in_flows": self.flows.as_dict(), "evicted": self.evicted.as_dict(),
                "overflow": self.overflow.as_dict(), "unattributed": unattributed or {},
                "top": [f.as_dict() for f in self.top]}


def unattributed(bytes_: Sequence[int], packets: Sequence[int], r: SlotFlows) -> dict[str, int]:
    """The interface's classes minus flows, evicted and overflow, by measure
    and direction: all 0 unless a packet met an entry being evicted."""
    whole = Counts()
    for name, i in _INDEX.items():
        c = BY_NAME[name]
        if c.layer is None or c.family is None:
            continue
        v = bytes_[i]
        if c.layer == "L3":
            setattr(whole, f"ip_{c.direction}", getattr(whole, f"ip_{c.direction}") + v)
            setattr(whole, f"packets_{c.direction}", getattr(whole, f"packets_{c.direction}") + packets[i])
        else:
            setattr(whole, f"payload_{c.direction}", getattr(whole, f"payload_{c.direction}") + v)
    out = {}
    parts = (r.flows, r.evicted, r.overflow)
    for name in ("ip_recv", "ip_send", "payload_recv", "payload_send", "packets_recv", "packets_send"):
        out[name] = getattr(whole, name) - sum(getattr(p, name) for p in parts)
    return out
