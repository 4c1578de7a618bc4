"""--containers: which container namespaces to start or stop watching.

The engine calls ``Discovery.plan()`` often (every quarter second, and every
10 ms for 2 s after an event said a container is starting); the plan says
what changed against the namespaces the engine watches: new container
namespaces to watch (every interface in each but lo, so send and receive
are the container's own view), and namespaces whose container began a new
life elsewhere (a restart seen before the old namespace went), to let go
first. Discovery never touches the engine: it returns the plan, the engine
applies it. A container that stops takes its namespace with it; the engine
notices that on its own.

How containers are found costs per container, not per process on the host
(``mode``):

- ``events`` (where a cgroup hierarchy can be watched): inotify on the
  cgroup tree (cgroups.py) names each container cgroup as the runtime makes
  it; discovery reads that cgroup's ``cgroup.procs`` and those processes
  only (procfs.ProcCache.add), with a second inotify on the runtimes'
  namespace directories (Docker's <exec-root>/netns, /run/netns). /proc is
  listed once a minute (``ProcCache.FULL_S``), as a safety net, and when the
  kernel's event queue overflowed or a new container's runtime could not
  be identified (a dockerd started after tcflow: its data root is read off
  its command line).
- ``processes`` (no cgroup hierarchy to watch): /proc is listed when the
  kernel handed out a new pid (reading only the processes not read before).
- ``scan``: the minute's full scan only. Not for use: the tests prove with it
  that the events are what count a new container from its first packet.
  ``TCFLOW_DISCOVERY`` chooses (events is the default).

A container's identity (its Group) is kept here, by namespace cookie, for
the engine's snapshots and carried totals.
"""

from __future__ import annotations

import ctypes
import os
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from tcflow.containers import cgroups, docker
from tcflow.containers.base import Group
from tcflow.containers.docker import docker_roots, dockerds, netns_dirs
from tcflow.containers.procfs import ProcCache, container_cgroup, scan
from tcflow.system.netns import Netns, cookie_of_current, run_in

IN_CREATE, IN_MOVED_TO, IN_NONBLOCK, IN_CLOEXEC = 0x100, 0x80, 0o4000, 0o2000000
MODES = ("events", "processes", "scan")
PENDING_S = 30.0  # a new container cgroup still empty after this is left to the full scan
FOLLOW_S = 5.0  # ... and read again this long after its first process, for the ones that follow
UNKNOWN_AFTER_S = 1.0  # a new container no runtime vouched for this long: list /proc (a new daemon?)
UNKNOWN_LISTING_S = 10.0  # ... at most this often
MAX_DOCKER_ROOTS = 16  # data roots remembered, for docker_removed()


@dataclass
class Plan:
    """``new``: namespaces to watch, with their containers; ``ended``: cookies
    of watched namespaces whose container started again elsewhere, to let go
    (carrying their final counts) before the new life's first snapshot."""

    new: list[tuple[Netns, Group]] = field(default_factory=list)
    ended: list[int] = field(default_factory=list)


class Discovery:
    def __init__(self, proc: str = "/proc", mode: Optional[str] = None,
                 cgroup_roots: Optional[list[tuple[str, str]]] = None):
        """``mode``: one of MODES; TCFLOW_DISCOVERY's, else events where it can.
        ``cgroup_roots``: (directory, cgroup path) to watch; cgroups.hierarchies() unless given."""
        mode = mode or os.environ.get("TCFLOW_DISCOVERY") or "events"
        if mode not in MODES:
            mode = "events"
        self.proc = proc
        self.groups: dict[int, Group] = {}      # netns cookie -> its containers
        self.host_network: list[Group] = []     # listed, not counted (their traffic is the host's)
        self.namespace_files = NamespaceFiles() if mode != "scan" else None
        self.cgroups: Optional[cgroups.CgroupEvents] = None
        if mode == "events":
            self.cgroups = cgroups.CgroupEvents(lambda path: container_cgroup(path) is not None, cgroup_roots)
            if not self.cgroups.active:
                self.cgroups, mode = None, "processes"  # no hierarchy to watch here
        self.mode = mode
        self.cache = ProcCache(proc, events=mode != "processes")
        self.pending: dict[str, float] = {}  # new container cgroup directories, still empty -> until when
        self._unknown: dict[str, float] = {}  # containers no runtime vouched for yet -> since
        self._unknown_listed = -UNKNOWN_LISTING_S
        self.unknown_listings = 0
        self.docker_roots: dict[str, None] = {}  # every data root seen, in order (a stopped dockerd's too)

    def close(self) -> None:
        if self.namespace_files is not None:
            self.namespace_files.close()
        if self.cgroups is not None:
            self.cgroups.close()

    def fds(self) -> list[int]:
        """The inotify fds that turn readable when a container may be starting."""
        return [w.fd for w in (self.namespace_files, self.cgroups) if w is not None and w.fd >= 0]

    def drain(self) -> None:
        """After fds() turned readable: read what happened (new container
        cgroups wait in ``pending`` for the next plan)."""
        if self.namespace_files is not None:
            self.namespace_files.drain()
        if self.cgroups is not None:
            self.cgroups.drain()
            now = time.monotonic()
            for directory in self.cgroups.take().values():
                if len(self.pending) < cgroups.MAX_PENDING:
                    self.pending[directory] = now + PENDING_S
            if self.cgroups.overflowed:  # events were lost: look at everything once
                self.cgroups.overflowed = False
                self.cache.list_due = True

    def quiet_s(self) -> float:
        """How long plan() has nothing to do unless an event comes (the loop
        sleeps that long, not 4 times a second, when events drive discovery);
        0 while new container cgroups are pending or without events."""
        if self.pending:
            return 0.0
        return self.cache.quiet_s()

    def _read_pending(self) -> bool:
        """The processes of the new container cgroups, read; True if any was
        new. A cgroup is read again while its first processes may still come
        (runc's init forks the container's process after it joined):
        FOLLOW_S after the first one, PENDING_S while it stays empty."""
        now = time.monotonic()
        added = False
        for directory, until in list(self.pending.items()):
            pids = cgroups.procs(directory)
            if pids:
                added |= self.cache.add(pids)
                if until - now > FOLLOW_S:
                    until = self.pending[directory] = now + FOLLOW_S
            if now >= until or (not pids and not os.path.isdir(directory)):
                del self.pending[directory]
        return added

    def plan(self, watched: Mapping[int, Netns]) -> Plan:
        """What to change, given the namespaces watched now (cookie -> Netns)."""
        added = self._read_pending() if self.pending else False
        if not self.cache.refresh() and not added:  # reads only the processes it has not read yet
            return Plan()  # no process started: no container did
        daemons = dockerds(self.proc, self.cache.dockerd_pids())
        for root in docker_roots(self.proc, daemons):
            self.docker_roots.setdefault(root)
            while len(self.docker_roots) > MAX_DOCKER_ROOTS:
                del self.docker_roots[next(iter(self.docker_roots))]
        if self.namespace_files is not None:
            self.namespace_files.watch(netns_dirs(self.proc, daemons))
        found = scan(self.proc, daemons=daemons, cache=self.cache)
        if self.cgroups is not None:
            self._unknown_runtime(found)
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

    def _unknown_runtime(self, found: list[Group]) -> None:
        """A new container no runtime vouched for a second after it started:
        maybe its daemon is new too (a dockerd started after tcflow names its
        data root on its command line), so /proc is listed once (at most
        every UNKNOWN_LISTING_S)."""
        now = time.monotonic()
        unknown = self.cache.unknown_young({c.id for g in found for c in g.containers})
        self._unknown = {cid: self._unknown.get(cid, now) for cid in unknown}
        if any(now - t >= UNKNOWN_AFTER_S for t in self._unknown.values()) \
                and now - self._unknown_listed >= UNKNOWN_LISTING_S:
            self._unknown_listed = now
            self.cache.list_due = True
            self.unknown_listings += 1

    def health(self) -> dict[str, Any]:
        """For /healthz: how containers are found, and what that cost so far."""
        out: dict[str, Any] = {"mode": self.mode, "proc_listings": self.cache.listings,
                               "processes_read": self.cache.reads, "unknown_listings": self.unknown_listings}
        if self.cgroups is not None:
            out.update(cgroup_dirs_watched=self.cgroups.watched, cgroup_watch_complete=self.cgroups.complete)
        return out

    def docker_removed(self, ids: list[str]) -> bool:
        """True if Docker keeps a record of none of these containers under
        any data root seen: removed, they never come back."""
        return bool(ids) and all(docker.removed(cid, self.docker_roots) for cid in ids)

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
