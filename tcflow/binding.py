"""Bind one interface: a slot, its key in the map, its hooks; and undo it.

Where recv is counted (``ingress``): "auto" is native XDP on a physical NIC
(no IFLA_INFO_KIND) and clsact ingress on virtual devices and wherever the
driver refuses native XDP; "xdp" (``xdp_mode`` auto/native/generic) or "tc"
as asked. send is always clsact egress.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from . import hooks, pins
from .links import Link
from .loader import PROG_TC_EGRESS, PROG_TC_INGRESS, PROG_XDP, Datapath
from .slots import IFACE_F_INCLUDE_LOCAL, SlotTable

INGRESS_CHOICES = ("auto", "xdp", "tc")
XDP_MODES = ("auto", "native", "generic")

VETH_XDP_NOTICE = (
    "native XDP on veth {key}: the veth driver then segments every GSO packet it receives; "
    "on a 2-core VM with kernel 6.18, TCP over one veth fell from about 17 to about 4 Gbit/s. "
    "Use --ingress tc (the default for veths) to count without that cost."
)


@dataclass(frozen=True)
class Settings:
    """What every attachment of one agent shares."""

    ingress: str = "auto"
    xdp_mode: str = "auto"
    include_local: bool = False
    pin: bool = False
    containers: bool = False  # also every container's namespace (tcflow.fleet)


class Binder:
    def __init__(self, dp: Datapath, slots: SlotTable, settings: Settings):
        self.dp, self.slots, self.settings = dp, slots, settings
        self.slot_of: dict[tuple[int, int], int] = {}  # (cookie, ifindex) -> slot
        self.adopted: set[tuple[int, int]] = set()

    def _ingress_for(self, link: Link) -> str:
        if self.settings.ingress != "auto":
            return self.settings.ingress
        return "tc" if link.kind else "xdp"  # only physical drivers have no IFLA_INFO_KIND

    def bind(self, ipr: Any, link: Link, notices: list[str]) -> None:
        """Count ``link``; with --pin, adopt a pinned attachment still in place.
        On an error, whatever was done for this link stays recorded in it, for
        release() to undo."""
        cookie = link.netns.cookie
        link.bound_as = link.bound_as or link.ifname
        if self.settings.pin and self._adopt(ipr, link, notices):
            return
        slot = self.slots.alloc()
        self.slot_of[(cookie, link.ifindex)] = slot
        flags = IFACE_F_INCLUDE_LOCAL if self.settings.include_local else 0
        self.slots.bind(cookie, link.ifindex, slot, flags)
        ingress = self._ingress_for(link)
        if ingress == "xdp":
            asked = self.settings.ingress == "xdp"
            try:
                hooks.attach_xdp(ipr, link, self.dp.prog(PROG_XDP, cookie),
                                 self.settings.xdp_mode if asked else "native")
                link.ingress = "xdp"
            except hooks.NativeRefused:
                if asked:
                    raise
                ingress = "tc"  # auto: a driver without native XDP is counted on clsact
        if ingress == "tc":
            link.ingress = "tc"
            hooks.attach_tc(ipr, link, self.dp.prog(PROG_TC_INGRESS, cookie), "ingress")
        hooks.attach_tc(ipr, link, self.dp.prog(PROG_TC_EGRESS, cookie), "egress")
        if link.ingress == "xdp" and link.xdp_mode == "native" and link.kind == "veth":
            notices.append(VETH_XDP_NOTICE.format(key=link.key))
        if self.settings.pin:
            ns = link.netns
            self.slots.write_meta(slot, pins.meta_for(
                slot, cookie=cookie, inode=ns.inode, netns=ns.name, netns_path=ns.path if ns.name else "",
                ifindex=link.ifindex, ifname=link.ifname, ingress=link.ingress, xdp_mode=link.xdp_mode,
                created_clsact=link.created_clsact, flags=flags))

    def _adopt(self, ipr: Any, link: Link, notices: list[str]) -> bool:
        """Take over a pinned attachment that is still in place; True if done."""
        key = (link.netns.cookie, link.ifindex)
        found_slot = self.slots.lookup(*key)
        if found_slot is None:
            return False
        found = hooks.tcflow_hooks(ipr, link.ifindex)
        if not (found["tc_egress"] and (found["xdp"] or found["tc_ingress"])):
            self.slots.unbind(*key)  # pinned, but its hooks were removed behind tcflow's back
            return False
        slot = found_slot[0]
        link.created_clsact = bool(self.slots.read_meta(slot).created_clsact)
        link.ingress = "xdp" if found["xdp"] else "tc"
        link.xdp_mode = found["xdp_mode"]
        self.slots.adopt(slot)
        self.slot_of[key] = slot
        self.adopted.add(key)
        if self._ingress_for(link) != link.ingress:
            notices.append(f"{link.key} was already attached with recv on {link.ingress}; "
                           "kept as it is (detach it first to change the hook)")
        return True

    def release(self, ipr: Optional[Any], link: Link, detach: bool, forget: bool) -> list[Exception]:
        """Stop tracking ``link``. ``detach``: take its hooks off (``ipr`` must
        be given). ``forget``: take its key (and pinned description) out of
        the maps; otherwise a pinned attachment keeps counting."""
        key = (link.netns.cookie, link.ifindex)
        errors: list[Exception] = []
        if detach and ipr is not None:
            xdp_fd = self.dp.prog(PROG_XDP, key[0]) if link.attached.get("xdp") else None
            errors = hooks.detach(ipr, link, xdp_fd)
        slot = self.slot_of.pop(key, None)
        if slot is not None:
            if forget:
                self.slots.unbind(*key)
                if self.settings.pin:
                    self.slots.clear_meta(slot)
            self.slots.free(slot)
        self.adopted.discard(key)
        return errors

    def is_adopted(self, link: Link) -> bool:
        return (link.netns.cookie, link.ifindex) in self.adopted

    def slot(self, link: Link) -> int:
        return self.slot_of[(link.netns.cookie, link.ifindex)]
