"""--containers: which container namespaces to start or stop watching.

The engine calls ``Discovery.plan()`` often (every quarter second, and every
10 ms for 2 s after a runtime made a namespace file); a scan of /proc
(procfs.py) finds the running containers, reading only the processes it has
not read before (ProcCache: one directory listing a scan, plus the new and
young processes), and the plan says what changed
against the namespaces the engine watches: new container namespaces to
watch (every interface in each but lo, so send and receive are the
container's own view), and namespaces whose container began a new life
elsewhere (a restart seen before the old namespace went), to let go first.
Discovery never touches the engine: it returns the plan, the engine applies
it. A container that stops takes its namespace with it; the engine notices
that on its own.

A container's identity (its Group) is kept here, by namespace cookie, for
the engine's snapshots and carried totals.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass, field
from typing import Mapping, Optional

from tcflow.containers.base import Group
from tcflow.containers.docker import dockerds, netns_dirs
from tcflow.containers.procfs import ProcCache, scan
from tcflow.system.netns import Netns, cookie_of_current, run_in

IN_CREATE, IN_MOVED_TO, IN_NONBLOCK, IN_CLOEXEC = 0x100, 0x80, 0o4000, 0o2000000


@dataclass
class Plan:
    """``new``: namespaces to watch, with their containers; ``ended``: cookies
    of watched namespaces whose container started again elsewhere, to let go
    (carrying their final counts) before the new life's first snapshot."""

    new: list[tuple[Netns, Group]] = field(default_factory=list)
    ended: list[int] = field(default_factory=list)


class Discovery:
    def __init__(self, proc: str = "/proc"):
        self.proc = proc
        self.groups: dict[int, Group] = {}      # netns cookie -> its containers
        self.host_network: list[Group] = []     # listed, not counted (their traffic is the host's)
        self.namespace_files = NamespaceFiles()
        self.cache = ProcCache(proc)

    def close(self) -> None:
        self.namespace_files.close()

    def plan(self, watched: Mapping[int, Netns]) -> Plan:
        """What to change, given the namespaces watched now (cookie -> Netns)."""
        if not self.cache.refresh():  # reads only the processes it has not read yet
            return Plan()  # no process started: no container did
        daemons = dockerds(self.proc, self.cache.dockerd_pids())
        self.namespace_files.watch(netns_dirs(self.proc, daemons))
        found = scan(self.proc, daemons=daemons, cache=self.cache)
        self.host_network = [g for g in found if g.host_network]
        by_inode = {ns.inode: cookie for cookie, ns in watched.items()}
        labels = {ns.name for ns in watched.values()}
        out = Plan()
        own = os.stat("/proc/self/ns/net").st_ino
        for g in found:
            if g.host_network or g.inode == own:
                continue  # never the host's interfaces (scan says why)
            cookie = by_inode.get(g.inode)
            if cookie is not None:
                if cookie in self.groups:
                    self.groups[cookie].containers = g.containers  # a pod gained or lost a container
                continue
            for old_cookie, old in list(self.groups.items()):
                if old.key == g.key and old_cookie in watched and old_cookie not in out.ended:
                    labels.discard(watched[old_cookie].name)
                    out.ended.append(old_cookie)
            path = f"{self.proc}/{g.pid}/ns/net"
            label = g.label if g.label not in labels else f"{g.label}@{g.containers[0].short_id}"
            try:
                if os.stat(path).st_ino != g.inode:
                    continue  # the pid went meanwhile
                cookie = run_in(path, cookie_of_current)
            except Exception:
                continue  # the container went while we looked; the next scan sees how things are
            labels.add(label)
            self.groups[cookie] = g
            out.new.append((Netns(label, path, g.inode, cookie), g))
        return out

    def forget(self, cookie: int) -> None:
        self.groups.pop(cookie, None)

    def identity(self, cookie: int) -> Optional[Group]:
        return self.groups.get(cookie)


class NamespaceFiles:
    """An inotify fd that turns readable when a runtime makes a namespace file
    (Docker's <exec-root>/netns, /run/netns): the moment to scan, before the
    runtime has wired the container's interfaces and started its process.
    Without inotify, the periodic scan still finds every container."""

    def __init__(self) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self._libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        self._watched: set[str] = set()

    def watch(self, dirs: list[str]) -> None:
        if self.fd < 0:
            return
        for d in dirs:
            if d not in self._watched and self._libc.inotify_add_watch(self.fd, os.fsencode(d),
                                                                       IN_CREATE | IN_MOVED_TO) >= 0:
                self._watched.add(d)

    def drain(self) -> None:
        for _ in range(64):
            try:
                if not os.read(self.fd, 65536):
                    return
            except BlockingIOError:
                return

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
