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
that total to the live counters, so the series never goes back.
"""

from __future__ import annotations

import os
from operator import add
from typing import TYPE_CHECKING, Optional

from . import containers
from .classes import NUM_CLASSES
from .netns import Netns, cookie_of_current, run_in
from .reader import Sums, read_slots
from .watch import Watch

if TYPE_CHECKING:
    from .agent import Agent
    from .links import Link

MAX_CARRIED = 65536  # (identity, interface) totals kept for containers that may come back
ZERO: Sums = ((0,) * NUM_CLASSES, (0,) * NUM_CLASSES)


class Fleet:
    def __init__(self, proc: str = "/proc"):
        self.proc = proc
        self.groups: dict[int, containers.Group] = {}      # netns cookie -> its containers
        self.host_network: list[containers.Group] = []     # listed, not counted (their traffic is the host's)
        self.carried: dict[tuple[str, str], Sums] = {}

    def discover(self, agent: "Agent") -> list[Watch]:
        """Watches for container namespaces not watched yet (the caller binds their links)."""
        found = containers.scan(self.proc)
        self.host_network = [g for g in found if g.host_network]
        watched = {w.ns.inode: cookie for cookie, w in agent.watches.items()}
        labels = {w.ns.name for w in agent.watches.values()}
        new = []
        for g in found:
            if g.host_network:
                continue
            cookie = watched.get(g.inode)
            if cookie is not None:
                if cookie in self.groups:
                    self.groups[cookie].containers = g.containers  # a pod gained or lost a container
                continue
            path = f"{self.proc}/{g.pid}/ns/net"
            try:
                if os.stat(path).st_ino != g.inode:
                    continue  # the pid went meanwhile
                cookie = run_in(path, cookie_of_current)
            except OSError:
                continue
            label = g.label if g.label not in labels else f"{g.label}@{g.containers[0].short_id}"
            labels.add(label)
            watch = Watch(Netns(label, path, g.inode, cookie))
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
        key = (g.key, link.ifname)
        cb, cp = self.carried.pop(key, ZERO)  # re-inserted last: the oldest go first
        self.carried[key] = (tuple(map(add, cb, b)), tuple(map(add, cp, p)))
        while len(self.carried) > MAX_CARRIED:
            del self.carried[next(iter(self.carried))]

    def totals(self, link: "Link", sums: Sums) -> Sums:
        """Live counts plus what earlier lives of the same container counted."""
        g = self.identity(link)
        if g is None:
            return sums
        cb, cp = self.carried.get((g.key, link.ifname), ZERO)
        if cb is ZERO[0]:
            return sums
        return tuple(map(add, cb, sums[0])), tuple(map(add, cp, sums[1]))
