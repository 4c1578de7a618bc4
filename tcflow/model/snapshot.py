"""Snapshots: the counters of every attached interface at one instant, as plain data.

Nothing here imports bcc or pyroute2: exporters take a Snapshot and return
text. ``document()`` is the one JSON form of a snapshot, shared by
``attach --json``, ``show --json`` and ``GET /traffic``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping, Optional, Sequence

from tcflow.model.classes import CLASSES, NAMES, SEED_COUNT


@dataclass(frozen=True)
class Hooks:
    """Where one interface is counted: ``ingress`` "xdp" or "tc" (recv),
    ``xdp_mode`` "native"/"generic" with XDP (else None), ``egress`` "tc"
    (send), ``pinned``: the counters outlive the process, and ``counting``:
    False for a pinned entry whose programs are gone from its hooks (its
    counts are frozen)."""

    ingress: str
    xdp_mode: Optional[str] = None
    egress: str = "tc"
    pinned: bool = False
    counting: bool = True

    def as_dict(self) -> dict[str, Any]:
        return {"ingress": self.ingress, "xdp_mode": self.xdp_mode, "egress": self.egress, "pinned": self.pinned,
                "counting": self.counting}


_INDEX = {n: i for i, n in enumerate(NAMES)}


class ClassCounts(Mapping[str, int]):
    """Counts by class name, over a sequence in class order: made for every
    interface on every read, so it copies nothing (1000 interfaces: two of
    these each, several times a second)."""

    __slots__ = ("_v",)

    def __init__(self, values: Sequence[int]):
        self._v = values

    def __getitem__(self, name: str) -> int:
        return self._v[_INDEX[name]]

    def __iter__(self) -> Iterator[str]:
        return iter(NAMES)

    def __len__(self) -> int:
        return len(NAMES)

    def __repr__(self) -> str:
        return repr(dict(zip(NAMES, self._v, strict=True)))


@dataclass(frozen=True)
class InterfaceCounters:
    """Counters of one attached interface, cumulative since it was attached.

    ``bytes`` and ``packets`` map every class name (tcflow.model.classes.NAMES) to
    an int. Caveats: L4 classes are payload bytes; L3 classes are IP bytes,
    with GSO aggregates expanded to the packets they stand for.
    ``netns`` is the namespace's label ("" for the one tcflow runs in).
    """

    ifname: str
    netns: str
    ifindex: int
    hooks: Hooks
    bytes: Mapping[str, int]
    packets: Mapping[str, int]
    container: Optional[Mapping[str, str]] = None  # containers.CONTAINER_LABELS, for a container's interface

    @property
    def key(self) -> str:
        """``NETNS/IFACE`` (just ``IFACE`` in tcflow's own namespace): the
        same form the command line takes."""
        return f"{self.netns}/{self.ifname}" if self.netns else self.ifname


def container_name(labels: Mapping[str, str]) -> str:
    """How a person names a container from its labels: its name, else its short id."""
    return labels.get("container") or labels.get("container_id", "")[:12]


@dataclass(frozen=True)
class Snapshot:
    """All attached interfaces at one instant.

    ``time`` is wall-clock (seconds since the epoch), ``monotonic`` is for
    rates. ``interfaces`` is keyed by InterfaceCounters.key.
    """

    time: float
    monotonic: float
    interfaces: Mapping[str, InterfaceCounters] = field(default_factory=dict)
    flows: Optional[Mapping[str, Mapping[str, Any]]] = None  # --flows: per key, tcflow.model.flows.SlotFlows.as_dict

    def rates(self, earlier: "Snapshot", measure: str = "bytes") -> dict[str, dict[str, float]]:
        """Bytes (or with ``measure`` "packets", packets) per second per class
        since ``earlier``, per interface.

        Interfaces missing from ``earlier`` (attached since) are left out.
        A counter that went backwards (a re-attach reset it) gives 0.
        """
        dt = self.monotonic - earlier.monotonic
        out: dict[str, dict[str, float]] = {}
        if dt <= 0:
            return out
        for key, now in self.interfaces.items():
            before = earlier.interfaces.get(key)
            if before is None:
                continue
            a, b = (now.bytes, before.bytes) if measure == "bytes" else (now.packets, before.packets)
            out[key] = {n: max(0, a[n] - b[n]) / dt for n in NAMES}
        return out


Entry = tuple[Any, ...]  # (ifname, netns, ifindex, hooks, bytes, packets[, container labels])


def make_snapshot(entries: Iterable[Entry], now: Optional[float] = None, mono: Optional[float] = None) -> Snapshot:
    """Build a Snapshot from (ifname, netns, ifindex, hooks, bytes, packets[, container labels])."""
    ifs = {}
    for ifname, netns, ifindex, hooks, b, p, *container in entries:
        if len(b) != len(NAMES) or len(p) != len(NAMES):
            raise ValueError(f"expected {len(NAMES)} counters per kind, got {len(b)} and {len(p)}")
        ic = InterfaceCounters(ifname, netns, ifindex, hooks, ClassCounts(b), ClassCounts(p),
                               container[0] if container else None)
        ifs[ic.key] = ic
    return Snapshot(time.time() if now is None else now, time.monotonic() if mono is None else mono, ifs)


def document(snap: Snapshot) -> dict[str, Any]:
    """The JSON form of a snapshot, for every consumer.

    Per interface: ``bytes`` and ``packets`` of every class by name; and, for
    users of the kprobe design's ``/traffic``, the 14 seed classes by name
    (``classes``) and by their old numeric index (``by_index``, "0".."13"),
    and the extended classes (``extended``). Cumulative since attach (for a
    container: since tcflow first saw it, across its restarts). ``container``:
    its identity (container_id, container, runtime, pod, namespace), or null.
    """
    out: dict[str, Any] = {}
    for key, ic in snap.interfaces.items():
        out[key] = {
            "interface": ic.ifname,
            "netns": ic.netns,
            "ifindex": ic.ifindex,
            "hook": ic.hooks.as_dict(),
            "bytes": dict(ic.bytes),
            "packets": dict(ic.packets),
            "classes": {c.name: ic.bytes[c.name] for c in CLASSES[:SEED_COUNT]},
            "by_index": {str(c.index): ic.bytes[c.name] for c in CLASSES[:SEED_COUNT]},
            "extended": {c.name: ic.bytes[c.name] for c in CLASSES[SEED_COUNT:]},
            "container": dict(ic.container) if ic.container is not None else None,
        }
        if snap.flows is not None and key in snap.flows:
            out[key]["flows"] = snap.flows[key]
    return {"time": round(snap.time, 6), "interfaces": out}
