"""`tcflow status --containers`: every container, its interfaces, the host-side
veth of each (found by the peer ifindex netlink reports), and whether tcflow
counts it. Plain netlink reads; the containers come from tcflow.containers.
"""

from __future__ import annotations

import time
from typing import Any, Optional

from tcflow import containers
from tcflow.host import hooks as _hooks
from tcflow.model.names import from_kernel, shown
from tcflow.system.netns import Netns, all_namespaces, cookie_of, cookie_of_current


def _links(ipr: Any) -> list[dict[str, Any]]:
    """Every link: ifindex, name, kind, and for a veth the peer's ifindex (IFLA_LINK)."""
    out = []
    for msg in ipr.get_links():
        info = msg.get_attr("IFLA_LINKINFO")
        kind = (info.get_attr("IFLA_INFO_KIND") or "") if info is not None else ""
        out.append({"ifindex": msg["index"], "name": from_kernel(msg.get_attr("IFLA_IFNAME")), "kind": kind,
                    "peer": msg.get_attr("IFLA_LINK"), "peer_netnsid": msg.get_attr("IFLA_LINK_NETNSID")})
    return out


def host_peers(skip: set[int]) -> dict[int, list[dict[str, Any]]]:
    """Veths outside the containers, by ifindex: the host's own first, then
    those of other namespaces (a runtime may keep its bridge in one). An
    ifindex repeats across namespaces, so each entry is a list; a match is
    confirmed by the peer pointing back."""
    out: dict[int, list[dict[str, Any]]] = {}
    for label, path, inode in all_namespaces():
        if inode in skip:
            continue
        cookie = cookie_of_current() if not label else cookie_of(path)
        if cookie is None:
            continue
        try:
            ipr = _hooks.ipr_for(Netns(label, path, inode, cookie))
        except Exception:
            continue
        try:
            for interface in _links(ipr):
                if interface["kind"] == "veth":
                    out.setdefault(interface["ifindex"], []).append({**interface, "netns": label})
        finally:
            ipr.close()
    return out


def collect(proc: str = "/proc") -> dict[str, Any]:
    found = containers.scan(proc)
    host = host_peers({g.inode for g in found if not g.host_network})
    rows = []
    for g in found:
        row: dict[str, Any] = {"name": g.label, "host_network": g.host_network, "pid": g.pid,
                               "netns_inode": g.inode, **g.labels(), "interfaces": []}
        if not g.host_network:
            row["interfaces"] = _interfaces(g, host, proc)
        rows.append(row)
    return {"containers": rows}


def _interfaces(g: containers.Group, host: dict[int, list[dict[str, Any]]], proc: str) -> list[dict[str, Any]]:
    path = f"{proc}/{g.pid}/ns/net"
    cookie = cookie_of(path)
    if cookie is None:
        return []  # gone since the scan
    ipr = _hooks.ipr_for(Netns(g.label, path, g.inode, cookie))
    try:
        out = []
        for interface in _links(ipr):
            if interface["name"] == "lo":
                continue
            found = _hooks.tcflow_hooks(ipr, interface["ifindex"])
            host_side: Optional[str] = None
            if interface["kind"] == "veth":
                for peer in host.get(interface["peer"], []):
                    if peer["peer"] == interface["ifindex"]:
                        host_side = f"{peer['netns']}/{peer['name']}" if peer["netns"] else peer["name"]
                        break
            out.append({"interface": shown(interface["name"]), "ifindex": interface["ifindex"],
                        "kind": interface["kind"] or "device",
                        "peer_ifindex": interface["peer"] if interface["kind"] == "veth" else None,
                        "host_side": shown(host_side) if host_side else None,
                        "counted": bool(found["tc_egress"] and (found["xdp"] or found["tc_ingress"]))})
        return out
    finally:
        ipr.close()


class PeerMap:
    """Host-side veths -> the container at their other end, for users who
    count the host side (`--match 'veth*'`): their JSON entries and metric
    labels then name the container too.

    Built from the containers (discovery's, else a cached scan: procfs.ProcCache
    reads only processes it has not read before) and one link dump per
    container namespace. Never inside a snapshot: the agent's loop rebuilds it
    (``due``) after link or container events (``changed``), and at most every
    ``retry_s`` while a veth asked about is still unknown (its container's
    record may come a moment after its veth; ``RETRIES`` times, then that
    veth is taken as no container's until the next event)."""

    RETRIES = 3

    def __init__(self, retry_s: float = 5.0, proc: str = "/proc", settle_s: float = 0.2):
        self.retry_s, self.proc, self.settle_s = retry_s, proc, settle_s
        self._by_pair: dict[tuple[int, int], containers.Group] = {}  # (host ifindex, container ifindex)
        self._at = -1e9
        self._changed_at: Optional[float] = time.monotonic()
        self._missed: dict[tuple[int, int], int] = {}  # unknown pairs asked about -> rebuilds since
        self._cache = containers.ProcCache(proc, events=True)
        self.rebuilds = 0

    def changed(self) -> None:
        """A link or a container came or went: rebuild soon (in ``settle_s``:
        a runtime makes a container's links in a burst)."""
        if self._changed_at is None:
            self._changed_at = time.monotonic()
        self._missed = {k: 0 for k in self._missed}

    def due(self) -> bool:
        now = time.monotonic()
        if self._changed_at is not None and now - self._changed_at >= self.settle_s:
            return True
        return any(n < self.RETRIES for n in self._missed.values()) and now - self._at >= self.retry_s

    def rebuild(self, groups: Optional[list[containers.Group]] = None) -> None:
        """``groups``: the containers discovery knows; else a scan finds them."""
        self._changed_at = None
        self._missed = {k: n + 1 for k, n in self._missed.items()}
        self.rebuilds += 1
        if groups is None:
            self._cache.list_due = True  # lists /proc, reads only processes new since the last time
            self._cache.refresh()
            groups = containers.scan(self.proc, cache=self._cache)
        out: dict[tuple[int, int], containers.Group] = {}
        for g in groups:
            if g.host_network:
                continue
            path = f"{self.proc}/{g.pid}/ns/net"
            cookie = cookie_of(path)
            if cookie is None:
                continue
            try:
                ipr = _hooks.ipr_for(Netns(g.label, path, g.inode, cookie))
            except Exception:
                continue
            try:
                for interface in _links(ipr):
                    if interface["kind"] == "veth" and interface["peer"]:
                        out[(interface["peer"], interface["ifindex"])] = g
            except Exception:
                continue
            finally:
                ipr.close()
        self._by_pair = out
        self._at = time.monotonic()
        self._missed = {k: n for k, n in self._missed.items() if k not in out}

    def container_of(self, ifindex: int, peer: Optional[int]) -> Optional[containers.Group]:
        """The container whose veth is the other end of (``ifindex``, ``peer``),
        as of the last rebuild; an unknown one asks for a rebuild later."""
        if not peer:
            return None
        g = self._by_pair.get((ifindex, peer))
        if g is None and len(self._missed) < 4096:
            self._missed.setdefault((ifindex, peer), 0)
        return g
