"""Bind one interface: a slot, its key in the map, its hooks; and undo it.
Which hook counts recv is the Settings' ``ingress`` (settings.py says how
"auto" chooses); send is always clsact egress."""

from __future__ import annotations

import os
from typing import Any, Optional

from tcflow.bpf.abi import IFACE_F_INCLUDE_LOCAL
from tcflow.bpf.loader import PROG_TC_EGRESS, PROG_TC_INGRESS, PROG_XDP, Datapath
from tcflow.engine.settings import Settings
from tcflow.engine.slots import SlotTable
from tcflow.host import hooks, pins
from tcflow.host.interfaces import Interface

VETH_XDP_NOTICE = (
    "native XDP on veth {key}: the veth driver then segments every GSO packet it receives; "
    "on a 2-core VM with kernel 6.18, TCP over one veth fell from about 17 to about 4 Gbit/s. "
    "Use --ingress tc (the default for veths) to count without that cost."
)


class Binder:
    def __init__(self, dp: Datapath, slots: SlotTable, settings: Settings):
        self.dp, self.slots, self.settings = dp, slots, settings
        self.slot_of: dict[tuple[int, int], int] = {}  # (cookie, ifindex) -> slot
        self.adopted: set[tuple[int, int]] = set()

    def _ingress_for(self, interface: Interface) -> str:
        if self.settings.ingress != "auto":
            return self.settings.ingress
        return "tc" if interface.kind else "xdp"  # only physical drivers have no IFLA_INFO_KIND

    def bind(self, ipr: Any, interface: Interface, notices: list[str]) -> None:
        """Count ``interface``; with --pin, adopt a pinned attachment still in place.
        On an error, whatever was done for this interface stays recorded in its attachment, for
        release() to undo."""
        cookie = interface.netns.cookie
        interface.attachment.bound_as = interface.attachment.bound_as or interface.ifname
        if self.settings.pin and self._adopt(ipr, interface, notices):
            return
        slot = self.slots.alloc()
        self.slot_of[(cookie, interface.ifindex)] = slot
        flags = IFACE_F_INCLUDE_LOCAL if self.settings.include_local else 0
        self.slots.bind(cookie, interface.ifindex, slot, flags)
        ingress = self._ingress_for(interface)
        if ingress == "xdp":
            asked = self.settings.ingress == "xdp"
            try:
                hooks.attach_xdp(ipr, interface, self.dp.prog(PROG_XDP, cookie),
                                 self.settings.xdp_mode if asked else "native")
                interface.attachment.ingress = "xdp"
            except hooks.NativeRefused:
                if asked:
                    raise
                ingress = "tc"  # auto: a driver without native XDP is counted on clsact
        if ingress == "tc":
            interface.attachment.ingress = "tc"
            hooks.attach_tc(ipr, interface, self.dp.prog(PROG_TC_INGRESS, cookie), "ingress")
        hooks.attach_tc(ipr, interface, self.dp.prog(PROG_TC_EGRESS, cookie), "egress")
        a = interface.attachment
        if a.ingress == "xdp" and a.xdp_mode == "native" and interface.kind == "veth":
            notices.append(VETH_XDP_NOTICE.format(key=interface.key))
        if self.settings.pin:
            ns, a = interface.netns, interface.attachment
            self.slots.write_meta(slot, pins.meta_for(
                slot, cookie=cookie, inode=ns.inode, netns=ns.name, netns_path=ns.path if ns.name else "",
                ifindex=interface.ifindex, ifname=interface.ifname, ingress=a.ingress, xdp_mode=a.xdp_mode,
                created_clsact=a.created_clsact, flags=flags))

    def _adopt(self, ipr: Any, interface: Interface, notices: list[str]) -> bool:
        """Take over a pinned attachment that is still in place; True if done."""
        key = (interface.netns.cookie, interface.ifindex)
        found_slot = self.slots.lookup(*key)
        if found_slot is None:
            return False
        found = hooks.tcflow_hooks(ipr, interface.ifindex)
        if not (found["tc_egress"] and (found["xdp"] or found["tc_ingress"])):
            self.slots.unbind(*key)  # pinned, but its hooks were removed behind tcflow's back
            return False
        slot = found_slot[0]
        meta = self.slots.read_meta(slot)
        interface.attachment.created_clsact = bool(meta.created_clsact)
        if meta.in_use:
            meta.pid = os.getpid()  # `tcflow status` names the process counting it now
            self.slots.write_meta(slot, meta)
        interface.attachment.ingress = "xdp" if found["xdp"] else "tc"
        interface.attachment.xdp_mode = found["xdp_mode"]
        self.slots.adopt(slot)
        self.slot_of[key] = slot
        self.adopted.add(key)
        if self._ingress_for(interface) != interface.attachment.ingress:
            notices.append(f"{interface.key} was already attached with recv on {interface.attachment.ingress}; "
                           "kept as it is (detach it first to change the hook)")
        return True

    def release(self, ipr: Optional[Any], interface: Interface, detach: bool, forget: bool) -> list[Exception]:
        """Stop tracking ``interface``. ``detach``: take its hooks off (``ipr`` must
        be given). ``forget``: take its key (and pinned description) out of
        the maps; otherwise a pinned attachment keeps counting."""
        key = (interface.netns.cookie, interface.ifindex)
        errors: list[Exception] = []
        if detach and ipr is not None:
            xdp_fd = self.dp.prog(PROG_XDP, key[0]) if interface.attachment.attached.get("xdp") else None
            errors = hooks.detach(ipr, interface, xdp_fd)
        slot = self.slot_of.pop(key, None)
        if slot is not None:
            if forget:
                self.slots.unbind(*key)
                if self.settings.pin:
                    self.slots.clear_meta(slot)
            self.slots.free(slot)
        self.adopted.discard(key)
        return errors

    def is_adopted(self, interface: Interface) -> bool:
        return (interface.netns.cookie, interface.ifindex) in self.adopted

    def slot(self, interface: Interface) -> int:
        return self.slot_of[(interface.netns.cookie, interface.ifindex)]
