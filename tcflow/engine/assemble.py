"""Snapshot assembly: one batch read of the counters (and, with --flows, of
the flow table first), joined with what each interface is: its name, its
namespace, its hooks, its container and what that container's earlier
lives counted."""

from __future__ import annotations

import dataclasses
from typing import Optional

from tcflow.bpf.loader import Datapath
from tcflow.bpf.reader import read_slots
from tcflow.containers.discovery import Discovery
from tcflow.containers.status import PeerMap
from tcflow.engine.binding import Binder
from tcflow.engine.carried import CarriedTotals, carried_key
from tcflow.engine.flows import FlowTable
from tcflow.host.interfaces import Interface
from tcflow.model.flows import unattributed
from tcflow.model.names import shown
from tcflow.model.snapshot import Hooks, Snapshot, make_snapshot


@dataclasses.dataclass
class Sources:
    """What a snapshot is read from and joined with."""

    dp: Datapath
    binder: Binder
    pinned: bool
    flows: Optional[FlowTable] = None
    flows_top: int = 0
    discovery: Optional[Discovery] = None
    carried: Optional[CarriedTotals] = None
    peers: Optional[PeerMap] = None
    flows_max_age: float = 0.0  # a read of the flow table this recent will do (FlowTable.report)


def assemble(interfaces: list[Interface], src: Sources) -> Snapshot:
    """Cumulative counters of every bound interface in ``interfaces``."""
    held = [i for i in interfaces if (i.netns.cookie, i.ifindex) in src.binder.slot_of]
    slots = [src.binder.slot(i) for i in held]
    # flows first: the classes, read after, hold at least what the flows hold
    reports = src.flows.report(slots, src.flows_top, src.flows_max_age) if src.flows is not None else None
    sums = read_slots(src.dp.map_fd("counters"), max(slots, default=-1) + 1, src.dp.ncpus)
    entries = []
    for interface, s in zip(held, slots, strict=True):
        g = src.discovery.identity(interface.netns.cookie) if src.discovery is not None else None
        b, p = sums[s]
        if g is not None and src.carried is not None:
            b, p = src.carried.plus(carried_key(g, interface), (b, p))
        if g is None and interface.kind == "veth" and interface.peer and src.peers is not None:
            g = src.peers.container_of(interface.ifindex, interface.peer)  # the host side of a container's veth?
        a = interface.attachment
        hooks = Hooks(a.ingress, a.xdp_mode if a.ingress == "xdp" else None, pinned=src.pinned)
        entries.append((shown(interface.ifname), shown(interface.netns.name), interface.ifindex, hooks, b, p,
                        g.labels() if g is not None else None))
    snap = make_snapshot(entries)
    if reports is not None:
        flows_of = {}
        for name, s in zip(snap.interfaces, slots, strict=True):
            r = reports[s]
            flows_of[name] = r.as_dict(unattributed(*sums[s], r))
        snap = dataclasses.replace(snap, flows=flows_of)
    return snap
