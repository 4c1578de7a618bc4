"""Interfaces: list them, find one by name, match globs, and diff what is
held against what is there now (for --follow). Plain netlink reads."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

from .errors import InterfaceError
from .names import from_kernel, shown
from .netns import Netns

# (ifindex, name, kind, up, peer ifindex of a veth or None) of every link in a namespace
Present = list[tuple[int, str, str, bool, Optional[int]]]
IFF_UP = 1


@dataclass
class Link:
    """One interface as tcflow attached it (or is about to)."""

    ifname: str
    ifindex: int
    netns: Netns
    kind: str = ""                  # IFLA_INFO_KIND; "" for a physical NIC
    peer: Optional[int] = None      # a veth's other end (IFLA_LINK), an ifindex in its own namespace
    bound_as: str = ""              # the name it had when tcflow began counting it (renames keep it)
    ingress: str = "xdp"            # "xdp" or "tc"
    xdp_mode: Optional[str] = None  # "native" or "generic" once attached
    created_clsact: bool = False
    attached: dict[str, bool] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """``NETNS/IFACE``, or ``IFACE`` in tcflow's own namespace, as shown to
        people (names.shown: safe to print, and the CLI takes it back)."""
        return f"{shown(self.netns.name)}/{shown(self.ifname)}" if self.netns.name else shown(self.ifname)


def list_links(ipr: Any) -> Present:
    """(ifindex, name, kind, up, veth peer) of every link in the IPRoute's namespace: one dump."""
    out: Present = []
    for msg in ipr.get_links():
        info = msg.get_attr("IFLA_LINKINFO")
        kind = (info.get_attr("IFLA_INFO_KIND") or "") if info is not None else ""
        peer = msg.get_attr("IFLA_LINK") if kind == "veth" else None
        out.append((msg["index"], from_kernel(msg.get_attr("IFLA_IFNAME")), kind, bool(msg["flags"] & IFF_UP), peer))
    return out


def lookup(present: Present, ns: Netns, ifname: str) -> Link:
    """The link named ``ifname`` among ``present``, or an error with the fix."""
    for ifindex, name, kind, _up, peer in present:
        if name == ifname:
            return Link(name, ifindex, ns, kind, peer=peer)
    where = f" in namespace {shown(ns.name)}" if ns.name else ""
    raise InterfaceError(f"no such interface{where}", ifname=shown(ifname),
                         hint="list interfaces with `ip link`" + (f" -n {shown(ns.name)}" if ns.name else ""))


def matching(present: Present, ns: Netns, globs: Iterable[str]) -> list[Link]:
    """Links whose name matches a shell glob; lo only when named, never by a glob
    (SPEC counts its traffic apart anyway)."""
    globs = list(globs)
    return [Link(name, ifindex, ns, kind, peer=peer) for ifindex, name, kind, _up, peer in present
            if name != "lo" and any(fnmatch.fnmatchcase(name, g) for g in globs)]


@dataclass
class Diff:
    """What changed between the links held and the links present."""

    gone: list[Link] = field(default_factory=list)
    renamed: list[tuple[Link, str, bool]] = field(default_factory=list)  # (link, new name, up now)
    new: list[Link] = field(default_factory=list)


def diff(held: Iterable[Link], present: Present, ns: Netns, globs: Iterable[str], follow: bool) -> Diff:
    """Held links that are gone or renamed; with ``follow``, new matches that
    are up. A link still down is left for a later event: container runtimes
    create veth pairs and move one end away at once, and only the end that
    stays is brought up, so the transient one is never hooked (and never
    reported gone)."""
    out = Diff()
    names = {ifindex: name for ifindex, name, *_ in present}
    up = {ifindex for ifindex, _, _, is_up, _ in present if is_up}
    held_idx = set()
    for link in held:
        held_idx.add(link.ifindex)
        if link.ifindex not in names:
            out.gone.append(link)
        elif names[link.ifindex] != link.ifname:
            out.renamed.append((link, names[link.ifindex], link.ifindex in up))
    if follow:
        out.new = [ln for ln in matching(present, ns, globs) if ln.ifindex not in held_idx and ln.ifindex in up]
    return out
