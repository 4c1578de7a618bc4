"""--containers: every container on the host, counted in its own namespace,
with its identity, and one series per container across its restarts.

The Agent calls ``discover()`` often (the CLI: every quarter second): a scan
of /proc (tcflow.containers) finds container namespaces not watched yet; each
gets a Watch that follows every interface in it but lo, so send and receive
are the container's own view. A container that stops takes its namespace
with it: the Agent's reap lets it go.

Continuity: a container keeps its identity (its runtime id; a pod's, the
sorted ids of its containers) across restarts, while its namespace, veth and
ifindexes are new. Before an interface's slot is freed, its final counts are
added to a total carried under (identity, interface name); snapshots add
that total to the live counters, so the series never goes back. With --pin
the carried totals are also written (atomically, root-only) under the
runtime directory, beside the pins' journal, so that a restart of tcflow
itself starts from them: the pinned counters of running containers carry on
by adoption, and what their earlier lives counted comes back from the file.
Like the pins, it lives until the next reboot.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import tempfile
from operator import add
from typing import TYPE_CHECKING, Optional

from . import containers, journal
from .classes import NUM_CLASSES
from .netns import Netns, cookie_of_current, run_in
from .reader import Sums, read_slots
from .safepath import make_dirs, trusted_dir
from .watch import Watch

if TYPE_CHECKING:
    from .agent import Agent
    from .links import Link

BURST_S, BURST_EVERY_S = 2.0, 0.01  # after a cue: scan every 10 ms for 2 s
IN_CREATE, IN_MOVED_TO, IN_NONBLOCK, IN_CLOEXEC = 0x100, 0x80, 0o4000, 0o2000000
MAX_CARRIED = 4096  # (identity, interface) totals kept for containers that may come back
MAX_CARRIED_FILE = 16 << 20
ZERO: Sums = ((0,) * NUM_CLASSES, (0,) * NUM_CLASSES)


class Fleet:
    """``pin_dir``: keep the carried totals across restarts of tcflow (--pin)."""

    def __init__(self, proc: str = "/proc", pin_dir: Optional[str] = None):
        self.proc = proc
        self.groups: dict[int, containers.Group] = {}      # netns cookie -> its containers
        self.host_network: list[containers.Group] = []     # listed, not counted (their traffic is the host's)
        self.carried: dict[tuple[str, str], Sums] = {}
        self.store = carried_path(pin_dir) if pin_dir else None
        if self.store:
            self.carried = _load(self.store)
        self.cue = Cue()

    def close(self) -> None:
        self.cue.close()

    def discover(self, agent: "Agent") -> list[Watch]:
        """Watches for container namespaces not watched yet (the caller binds their links)."""
        daemons = containers.dockerds(self.proc)  # one walk of /proc for both
        self.cue.watch(containers.netns_dirs(self.proc, daemons))
        found = containers.scan(self.proc, daemons=daemons)
        self.host_network = [g for g in found if g.host_network]
        watched = {w.ns.inode: cookie for cookie, w in agent.watches.items()}
        labels = {w.ns.name for w in agent.watches.values()}
        new = []
        own = os.stat("/proc/self/ns/net").st_ino
        for g in found:
            if g.host_network or g.inode == own:
                continue  # never the host's interfaces (containers.scan says why)
            cookie = watched.get(g.inode)
            if cookie is not None:
                if cookie in self.groups:
                    self.groups[cookie].containers = g.containers  # a pod gained or lost a container
                continue
            # A new life of a container still watched in its old namespace (a
            # restart seen before the old one was reaped): the old life is over,
            # so let it go now, which carries its final counts, before the new
            # life's first snapshot.
            for old_cookie, old in list(self.groups.items()):
                if old.key == g.key and old_cookie in agent.watches:
                    labels.discard(agent.watches[old_cookie].ns.name)
                    agent.let_go(agent.watches[old_cookie])
            path = f"{self.proc}/{g.pid}/ns/net"
            label = g.label if g.label not in labels else f"{g.label}@{g.containers[0].short_id}"
            try:
                if os.stat(path).st_ino != g.inode:
                    continue  # the pid went meanwhile
                cookie = run_in(path, cookie_of_current)
                watch = Watch(Netns(label, path, g.inode, cookie))
            except Exception:
                continue  # the container went while we looked; the next scan sees how things are
            labels.add(label)
            watch.globs, watch.follow = ["*"], True
            agent.watches[cookie] = watch
            self.groups[cookie] = g
            new.append(watch)
        return new

    def forget(self, cookie: int) -> None:
        self.groups.pop(cookie, None)

    def identity(self, link: "Link") -> Optional[containers.Group]:
        return self.groups.get(link.netns.cookie)

    def carry(self, agent: "Agent", link: "Link") -> None:
        """Keep the final counts of a container's interface before its slot goes."""
        g = self.identity(link)
        binder = agent.binder
        if g is None or binder is None or agent.dp is None or (link.netns.cookie, link.ifindex) not in binder.slot_of:
            return
        slot = binder.slot(link)
        b, p = read_slots(agent.dp.map_fd("counters"), slot + 1, agent.dp.ncpus)[slot]
        # under the name it was counted as: a runtime renames a stopping
        # container's eth0 back to vethXXX before it takes it away
        key = (g.key, link.bound_as or link.ifname)
        cb, cp = self.carried.pop(key, ZERO)  # re-inserted last: the oldest go first
        self.carried[key] = (tuple(map(add, cb, b)), tuple(map(add, cp, p)))
        while len(self.carried) > MAX_CARRIED:
            del self.carried[next(iter(self.carried))]
        if self.store:
            _save(self.store, self.carried)

    def totals(self, link: "Link", sums: Sums) -> Sums:
        """Live counts plus what earlier lives of the same container counted."""
        g = self.identity(link)
        if g is None:
            return sums
        cb, cp = self.carried.get((g.key, link.bound_as or link.ifname), ZERO)
        if cb is ZERO[0]:
            return sums
        return tuple(map(add, cb, sums[0])), tuple(map(add, cp, sums[1]))


def carried_path(pin_dir: str) -> str:
    tag = hashlib.sha256(pin_dir.encode()).hexdigest()[:16]
    return os.path.join(journal.RUN_DIR, "carried", f"{tag}.json")


def _load(path: str) -> dict[tuple[str, str], Sums]:
    """The carried totals a pinned tcflow wrote, or none: absent, torn or not root's alone."""
    try:
        if not trusted_dir(os.path.dirname(path), journal.JournalError):
            return {}
    except journal.JournalError:
        return {}
    raw = containers.read_small(path, MAX_CARRIED_FILE)
    try:
        doc = json.loads(raw) if raw else []
        out = {}
        for ident, ifname, b, p in doc[-MAX_CARRIED:]:
            if len(b) != NUM_CLASSES or len(p) != NUM_CLASSES:
                return {}
            out[(str(ident), str(ifname))] = (tuple(int(x) for x in b), tuple(int(x) for x in p))
        return out
    except (ValueError, TypeError):
        return {}


def _save(path: str, carried: dict[tuple[str, str], Sums]) -> None:
    d = os.path.dirname(path)
    try:
        make_dirs(d, 0o700, journal.JournalError)
        fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-")
        with os.fdopen(fd, "w") as f:
            json.dump([[i, n, list(b), list(p)] for (i, n), (b, p) in carried.items()], f)
        os.rename(tmp, path)
    except (OSError, journal.JournalError):
        pass  # the totals stay in memory; only a restart of tcflow would lose them


class Cue:
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
