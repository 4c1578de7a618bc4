"""One watched network namespace: its netlink handles, its links, its targets."""

from __future__ import annotations

import errno
import os
import socket
import struct
from typing import Any, Optional

from tcflow.host import hooks
from tcflow.host.interfaces import Interface, Present, list_command, list_interfaces, lookup, matching
from tcflow.model.errors import InterfaceError
from tcflow.system.netns import Netns, run_in

RTMGRP_LINK = 1
RTMGRP_TC = 8  # qdisc and filter changes: someone else removing tcflow's hooks
RTM_NEWLINK, RTM_DELLINK, RTM_DELQDISC, RTM_DELTFILTER = 16, 17, 37, 45
NLMSG = struct.Struct("=IHHII")  # nlmsghdr; ifinfomsg and tcmsg both hold the ifindex 4 bytes after it
EVENT_RCVBUF = 1 << 20  # fewer overruns under churn; an overrun is harmless (see drain)
MAX_DRAIN = 4096


class Watch:
    """Interfaces tcflow counts in one namespace, and how it learns of changes.

    tcflow's own netlink sockets would keep a deleted namespace alive, so
    ``alive()`` checks the name (or process) the user gave, and the owner
    closes the Watch once it is gone, which lets the namespace go.
    """

    def __init__(self, ns: Netns):
        self.ns = ns
        self.names: list[str] = []
        self.globs: list[str] = []
        self.follow = False
        self.interfaces: dict[int, Interface] = {}  # ifindex -> Interface
        self.ipr: Any = hooks.ipr_for(ns)
        self._events: Optional[socket.socket] = None

    def plan(self, names: tuple[str, ...], globs: tuple[str, ...], follow: bool,
             up_only: bool = False) -> list[Interface]:
        """Take these names and globs on; the interfaces they add to what is held.
        An unknown name, or globs that match nothing without follow, is an error.
        ``up_only``: glob matches that are down are left for the link event
        that brings them up (a container's veth, still under the runtime's
        temporary name)."""
        self.names += [n for n in names if n not in self.names]
        self.globs += [g for g in globs if g not in self.globs]
        self.follow = self.follow or follow
        present = self.present()  # one dump, not two requests per name
        named = [lookup(present, self.ns, n) for n in names]
        known = {interface.ifindex for interface in named} | set(self.interfaces)
        interfaces = [interface for interface in named if interface.ifindex not in self.interfaces]
        up = {ifindex for ifindex, _, _, is_up, _ in present if is_up} if up_only else None
        interfaces += [interface for interface in matching(present, self.ns, globs)
                       if interface.ifindex not in known and (up is None or interface.ifindex in up)]
        if not interfaces and not self.interfaces and not follow:
            raise InterfaceError("no interface matches " + " ".join(repr(g) for g in globs),
                                 hint=f"list interfaces with `{list_command(self.ns)}`, or add --follow to wait for "
                                      "them")
        return interfaces

    def present(self) -> Present:
        return list_interfaces(self.ipr)

    def events_fd(self) -> int:
        """A netlink socket (in this namespace) readable on link changes."""
        if self._events is None:
            def make() -> socket.socket:
                s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC, 0)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, EVENT_RCVBUF)
                s.bind((0, RTMGRP_LINK | RTMGRP_TC))
                return s

            self._events = run_in(self.ns.path, make) if self.ns.name else make()
        return self._events.fileno()

    def drain(self) -> tuple[bool, set[int]]:
        """Empty the event socket: whether a link changed, and the interfaces
        whose hooks may have changed (a filter or qdisc deleted, a link
        changed: its XDP program). Links themselves are not read from the
        events: the caller diffs a full dump of the interfaces. So an overrun
        (ENOBUFS: the kernel dropped events while the buffer was full) needs
        nothing more than that same full resync, and every held interface is
        said to have changed. Bounded, so a flood cannot hold it here."""
        touched: set[int] = set()
        links = self._events is None  # no socket yet: resync
        if self._events is None:
            return links, touched
        for _ in range(MAX_DRAIN):
            try:
                data = self._events.recv(65536)
            except BlockingIOError:
                break
            except OSError as e:
                if e.errno != errno.ENOBUFS:
                    raise
                touched |= set(self.interfaces)
                links = True
                continue
            if not data:
                break
            link, hooks_touched = _hook_events(data)
            links, touched = links or link, touched | hooks_touched
        return links, touched
    def alive(self) -> bool:
        """False once the namespace's name (or process) is gone."""
        if not self.ns.name:
            return True
        try:
            return os.stat(self.ns.path).st_ino == self.ns.inode
        except OSError:
            return False

    def close(self) -> None:
        if self._events is not None:
            self._events.close()
            self._events = None
        if self.ipr is not None:
            self.ipr.close()
            self.ipr = None


def _hook_events(data: bytes) -> tuple[bool, set[int]]:
    """Whether one netlink datagram holds a link message, and the ifindexes
    it names that could mean a hook went: RTM_DELTFILTER, RTM_DELQDISC,
    RTM_NEWLINK."""
    out, off, link = set(), 0, False
    while off + NLMSG.size + 8 <= len(data):
        length, mtype = NLMSG.unpack_from(data, off)[:2]
        if length < NLMSG.size:
            break
        link = link or mtype in (RTM_NEWLINK, RTM_DELLINK)
        if mtype in (RTM_NEWLINK, RTM_DELQDISC, RTM_DELTFILTER):
            out.add(struct.unpack_from("=i", data, off + NLMSG.size + 4)[0])
        off += (length + 3) & ~3
    return link, out
