"""Monitor: the library API that the CLI and exporters use.

    with tcflow.Monitor(["veth0"], netns="ns1") as m:
        snap = m.snapshot()

Attaching is all or nothing: if one interface fails, what was attached for
the others is removed again before the error is raised.
"""

from __future__ import annotations

import ctypes
import threading
from typing import Any, Optional, Sequence

from . import attach as _attach
from . import netns as _netns
from .counters import Snapshot, make_snapshot, read_slots
from .errors import InterfaceError, LimitError
from .loader import PROG_TC_EGRESS, PROG_TC_INGRESS, PROG_XDP, Datapath, Options, datapath

IFACE_F_INCLUDE_LOCAL = 1
_slot_lock = threading.Lock()
_slots_in_use: dict[int, set[int]] = {}  # id(datapath) -> slots this process holds


def _alloc_slot(dp: Datapath) -> int:
    with _slot_lock:
        held = _slots_in_use.setdefault(id(dp), set())
        taken = held | {v.slot for v in dp.ifaces.values()}
        for s in range(dp.options.max_ifaces):
            if s not in taken:
                held.add(s)
                return s
    raise LimitError(f"all {dp.options.max_ifaces} interface slots are in use",
                     hint="detach interfaces, or raise the limit with --max-interfaces")


def _free_slot(dp: Datapath, slot: int) -> None:
    with _slot_lock:
        _slots_in_use.get(id(dp), set()).discard(slot)


class Monitor:
    """Counters for a set of interfaces in one network namespace.

    ``ingress`` is "xdp" (default) or "tc"; ``xdp_mode`` "auto" (native, else
    generic), "native" or "generic". ``include_local`` counts loopback and
    src == dst traffic in the classes instead of only in LOCAL_*.
    """

    def __init__(self, interfaces: Sequence[str], netns: Optional[str] = None, pid: Optional[int] = None,
                 ingress: str = "xdp", xdp_mode: str = "auto", include_local: bool = False,
                 options: Options = Options()):
        if ingress not in ("xdp", "tc"):
            raise InterfaceError(f"unknown ingress hook {ingress!r}", hint="use xdp or tc")
        if xdp_mode not in ("auto", "native", "generic"):
            raise InterfaceError(f"unknown XDP mode {xdp_mode!r}", hint="use auto, native or generic")
        if not interfaces:
            raise InterfaceError("no interface given", hint="name at least one, e.g. `tcflow attach eth0`")
        self.ifnames = list(dict.fromkeys(interfaces))
        self.netns_arg, self.pid = netns, pid
        self.ingress, self.xdp_mode, self.include_local = ingress, xdp_mode, include_local
        self.options = options
        self.links: list[_attach.Link] = []
        self._slots: dict[int, int] = {}  # ifindex -> slot
        self.dp: Optional[Datapath] = None
        self.ns: Optional[_netns.Netns] = None
        self._ipr: Any = None

    # -- lifecycle -------------------------------------------------------
    def attach(self) -> "Monitor":
        self.ns = _netns.resolve(self.netns_arg, self.pid)
        self._ipr = _attach.ipr_for(self.ns)
        try:
            links = [_attach.lookup(self._ipr, self.ns, n) for n in self.ifnames]
            self.dp = datapath(self.options)
            for link in links:
                self._attach_one(link)
        except BaseException:
            self.close()
            raise
        return self

    def _attach_one(self, link: _attach.Link) -> None:
        dp = self.dp
        assert dp is not None and self.ns is not None
        slot = _alloc_slot(dp)
        self._slots[link.ifindex] = slot
        # Zero the slot before the key goes in: a slot freed by an earlier
        # interface must not hand its counts to this one.
        dp.counters[ctypes.c_uint32(slot)] = dp.counters.Leaf()
        key = dp.ifaces.Key(self.ns.cookie, link.ifindex, 0)
        dp.ifaces[key] = dp.ifaces.Leaf(slot, IFACE_F_INCLUDE_LOCAL if self.include_local else 0)
        self.links.append(link)
        link.ingress = self.ingress
        cookie = self.ns.cookie
        if self.ingress == "xdp":
            _attach.attach_xdp(self._ipr, link, dp.prog(PROG_XDP, cookie), self.xdp_mode)
        else:
            _attach.attach_tc(self._ipr, link, dp.prog(PROG_TC_INGRESS, cookie), "ingress")
        _attach.attach_tc(self._ipr, link, dp.prog(PROG_TC_EGRESS, cookie), "egress")

    def close(self) -> None:
        """Detach everything this Monitor attached; safe to call twice."""
        errors: list[BaseException] = []
        dp, ns, ipr = self.dp, self.ns, self._ipr
        for link in reversed(self.links):
            for step in (
                lambda: _attach.detach_tc(ipr, link, "egress"),
                lambda: _attach.detach_tc(ipr, link, "ingress"),
                lambda: _attach.detach_xdp(ipr, link, dp.prog(PROG_XDP, ns.cookie))
                if dp and ns and link.attached.get("xdp") else None,
                lambda: _attach.drop_clsact_if_ours(ipr, link),
            ):
                try:
                    step()
                except BaseException as e:  # keep detaching the rest
                    errors.append(e)
        if dp is not None and ns is not None:
            for ifindex, slot in self._slots.items():
                try:
                    del dp.ifaces[dp.ifaces.Key(ns.cookie, ifindex, 0)]
                except KeyError:
                    pass
                _free_slot(dp, slot)
        self.links, self._slots = [], {}
        if ipr is not None:
            ipr.close()
            self._ipr = None
        if errors:
            raise errors[0]

    def __enter__(self) -> "Monitor":
        return self.attach()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- read -------------------------------------------------------------
    def hooks(self, link: _attach.Link) -> dict[str, Optional[str]]:
        return {"ingress": link.ingress, "xdp_mode": link.xdp_mode if link.ingress == "xdp" else None,
                "egress": "tc"}

    def snapshot(self) -> Snapshot:
        """Cumulative counters of every attached interface, one batch read."""
        dp, ns = self.dp, self.ns
        if dp is None or ns is None:
            raise InterfaceError("the monitor is not attached", hint="use `with Monitor(...)` or call attach()")
        nslots = max(self._slots.values(), default=-1) + 1
        sums = read_slots(dp.map_fd("counters"), nslots, dp.counters.total_cpu)
        entries = []
        for link in self.links:
            b, p = sums[self._slots[link.ifindex]]
            entries.append((link.ifname, ns.name, link.ifindex, self.hooks(link), b, p))
        return make_snapshot(entries)


