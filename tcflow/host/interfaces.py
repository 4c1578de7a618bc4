"""Interfaces: list them, find one by name, match globs, and diff what is
held against what is there now (for --follow). Plain netlink reads.

An Interface is what netlink says of one (name, index, namespace, kind,
veth peer); its Attachment is what tcflow did to it (hooks.py writes it)."""

from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

from tcflow.model.errors import InterfaceError, shell_words
from tcflow.model.names import from_kernel, shown
from tcflow.system.netns import Netns

# (ifindex, name, kind, up, peer ifindex of a veth or None) of every interface in a namespace
Present = list[tuple[int, str, str, bool, Optional[int]]]
IFF_UP = 1


@dataclass
class Attachment:
    """What tcflow did to one interface: hooks.py records each step as it
    attaches, so that detaching undoes exactly that and nothing else."""

    bound_as: str = ""              # the name it had when tcflow began counting it (renames keep it)
    ingress: str = "xdp"            # where recv is counted: "xdp" or "tc"
    xdp_mode: Optional[str] = None  # "native" or "generic" once attached
    created_clsact: bool = False    # the clsact qdisc is tcflow's (removed with the last filter)
    attached: dict[str, bool] = field(default_factory=dict)  # hook ("xdp", "ingress", "egress") -> done


@dataclass
class Interface:
    """One interface as netlink reported it, and what tcflow did to it."""

    ifname: str
    ifindex: int
    netns: Netns
    kind: str = ""                  # IFLA_INFO_KIND; "" for a physical NIC
    peer: Optional[int] = None      # a veth's other end (IFLA_LINK), an ifindex in its own namespace
    attachment: Attachment = field(default_factory=Attachment)

    @property
    def key(self) -> str:
        """``NETNS/IFACE``, or ``IFACE`` in tcflow's own namespace, as shown to
        people (names.shown: safe to print, and the CLI takes it back)."""
        return f"{shown(self.netns.name)}/{shown(self.ifname)}" if self.netns.name else shown(self.ifname)


def list_interfaces(ipr: Any) -> Present:
    """(ifindex, name, kind, up, veth peer) of every interface in the IPRoute's namespace: one dump."""
    out: Present = []
    for msg in ipr.get_links():
        info = msg.get_attr("IFLA_LINKINFO")
        kind = (info.get_attr("IFLA_INFO_KIND") or "") if info is not None else ""
        peer = msg.get_attr("IFLA_LINK") if kind == "veth" else None
        out.append((msg["index"], from_kernel(msg.get_attr("IFLA_IFNAME")), kind, bool(msg["flags"] & IFF_UP), peer))
    return out


def lookup(present: Present, ns: Netns, ifname: str) -> Interface:
    """The interface named ``ifname`` among ``present``, or an error with the fix."""
    for ifindex, name, kind, _up, peer in present:
        if name == ifname:
            return Interface(name, ifindex, ns, kind, peer=peer)
    where = f" in namespace {shown(ns.name)}" if ns.name else ""
    near = difflib.get_close_matches(ifname, [name for _, name, *_ in present], n=1, cutoff=0.6)
    hint = f"did you mean {shown(near[0])}? " if near else ""
    raise InterfaceError(f"no such interface{where}", ifname=shown(ifname),
                         hint=f"{hint}list them with `{list_command(ns)}`")


def list_command(ns: Netns) -> str:
    """The command that lists the interfaces of ``ns``, ready to paste."""
    if not ns.name:
        return "ip link"
    if ns.name.startswith("pid:") and ns.name[4:].isdigit():
        return f"nsenter -t {ns.name[4:]} -n ip link"
    return f"ip -n {shell_words([shown(ns.name)])} link"


def matching(present: Present, ns: Netns, globs: Iterable[str]) -> list[Interface]:
    """Links whose name matches a shell glob; lo only when named, never by a glob
    (SPEC counts its traffic apart anyway)."""
    globs = list(globs)
    return [Interface(name, ifindex, ns, kind, peer=peer) for ifindex, name, kind, _up, peer in present
            if name != "lo" and any(fnmatch.fnmatchcase(name, g) for g in globs)]


@dataclass
class Diff:
    """What changed between the interfaces held and those present."""

    gone: list[Interface] = field(default_factory=list)
    renamed: list[tuple[Interface, str, bool]] = field(default_factory=list)  # (interface, new name, up now)
    new: list[Interface] = field(default_factory=list)


def diff(held: Iterable[Interface], present: Present, ns: Netns, globs: Iterable[str], follow: bool) -> Diff:
    """Held interfaces that are gone or renamed; with ``follow``, new matches that
    are up. A link still down is left for a later event: container runtimes
    create veth pairs and move one end away at once, and only the end that
    stays is brought up, so the transient one is never hooked (and never
    reported gone)."""
    out = Diff()
    names = {ifindex: name for ifindex, name, *_ in present}
    up = {ifindex for ifindex, _, _, is_up, _ in present if is_up}
    held_idx = set()
    for interface in held:
        held_idx.add(interface.ifindex)
        if interface.ifindex not in names:
            out.gone.append(interface)
        elif names[interface.ifindex] != interface.ifname:
            out.renamed.append((interface, names[interface.ifindex], interface.ifindex in up))
    if follow:
        out.new = [i for i in matching(present, ns, globs) if i.ifindex not in held_idx and i.ifindex in up]
    return out
