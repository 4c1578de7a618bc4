"""Carried totals: one series per container across its restarts.

A container keeps its identity (its runtime id; a pod's, the sorted ids of
its containers) across restarts, while its namespace, veth and ifindexes are
new. Before an interface's slot is freed, its final counts are added to a
total carried under (identity, interface name); snapshots add that total to
the live counters, so the series never goes back.

With --pin the totals are also written (atomically, root-only) under the
runtime directory, beside the pins' journal, so that a restart of tcflow
itself starts from them: the pinned counters of running containers carry on
by adoption, and what their earlier lives counted comes back from the file.
Like the pins, it lives until the next reboot.

A container that can never come back takes its totals with it: Docker's
removed containers (no record left under any data root tcflow has seen; a
`docker run --rm` life, a `docker rm`) are forgotten at the next prune, so
that a node that runs short-lived containers all day keeps only the totals
of containers that still exist. Other runtimes keep no record tcflow reads
after a container stops: their totals stay until the limit pushes them out.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from operator import add
from typing import Callable, Optional

from tcflow.bpf.reader import Sums
from tcflow.containers import Group, read_small
from tcflow.host import journal
from tcflow.host.interfaces import Interface
from tcflow.model.classes import NUM_CLASSES
from tcflow.system.safepath import make_dirs, trusted_dir

MAX_CARRIED = 4096  # (identity, interface) totals kept for containers that may come back
MAX_CARRIED_FILE = 16 << 20
PRUNE_S = 60.0  # at most this often: one stat per carried Docker container
ZERO: Sums = ((0,) * NUM_CLASSES, (0,) * NUM_CLASSES)
Key = tuple[str, str]  # (container identity, interface name)


class CarriedTotals:
    """``pin_dir``: keep the totals across restarts of tcflow (--pin)."""

    def __init__(self, pin_dir: Optional[str] = None, limit: int = MAX_CARRIED):
        self.limit = limit
        self.store = carried_path(pin_dir) if pin_dir else None
        self.runtimes: dict[str, str] = {}  # identity -> its containers' runtimes, joined with ","
        self.totals: dict[Key, Sums] = _load(self.store, limit, self.runtimes) if self.store else {}
        self._pruned = time.monotonic()
        self.pruned = 0  # totals forgotten because their container is gone for good

    def add(self, key: Key, sums: Sums, runtimes: str = "") -> None:
        """Keep the final counts of one interface of a container's life;
        ``runtimes``: of the identity's containers (what prune() can ask about)."""
        cb, cp = self.totals.pop(key, ZERO)  # re-inserted last: the oldest go first
        self.totals[key] = (tuple(map(add, cb, sums[0])), tuple(map(add, cp, sums[1])))
        if runtimes:
            self.runtimes[key[0]] = runtimes
        while len(self.totals) > self.limit:
            self._drop(next(iter(self.totals)))
        self._save()

    def _drop(self, key: Key) -> None:
        del self.totals[key]
        if not any(k[0] == key[0] for k in self.totals):
            self.runtimes.pop(key[0], None)

    def _save(self) -> None:
        if self.store:
            _save(self.store, self.totals, self.runtimes)

    def prune(self, docker_removed: Callable[[list[str]], bool], force: bool = False) -> int:
        """Forget the totals of Docker containers that are gone for good
        (``docker_removed(ids)``: no record of any of them is left), at most
        every PRUNE_S unless ``force``; how many were forgotten."""
        now = time.monotonic()
        if not force and now - self._pruned < PRUNE_S:
            return 0
        self._pruned = now
        gone = {ident for ident, rt in self.runtimes.items()
                if rt == "docker" and docker_removed(ident.split(","))}
        if not gone:
            return 0
        keys = [k for k in self.totals if k[0] in gone]
        for k in keys:
            del self.totals[k]
        for ident in gone:
            del self.runtimes[ident]
        self.pruned += len(keys)
        self._save()
        return len(keys)

    def plus(self, key: Key, sums: Sums) -> Sums:
        """Live counts plus what earlier lives of the same container counted."""
        cb, cp = self.totals.get(key, ZERO)
        if cb is ZERO[0]:
            return sums
        return tuple(map(add, cb, sums[0])), tuple(map(add, cp, sums[1]))


def runtimes_of(group: Group) -> str:
    return ",".join(sorted({c.runtime for c in group.containers}))


def carried_key(group: Group, interface: Interface) -> Key:
    """(container identity, interface name) of a container's interface: under
    the name it was counted as, since a runtime renames a stopping
    container's eth0 back to vethXXX before it takes it away."""
    return group.key, interface.attachment.bound_as or interface.ifname


def carried_path(pin_dir: str) -> str:
    tag = hashlib.sha256(pin_dir.encode()).hexdigest()[:16]
    return os.path.join(journal.RUN_DIR, "carried", f"{tag}.json")


def _load(path: str, limit: int, runtimes: dict[str, str]) -> dict[Key, Sums]:
    """The carried totals a pinned tcflow wrote, or none: absent, torn or not
    root's alone. Each identity's runtimes go into ``runtimes``."""
    try:
        if not trusted_dir(os.path.dirname(path), journal.JournalError):
            return {}
    except journal.JournalError:
        return {}
    raw = read_small(path, MAX_CARRIED_FILE)
    try:
        doc = json.loads(raw) if raw else []
        out = {}
        kinds: dict[str, str] = {}
        for entry in doc[-limit:]:
            ident, ifname, b, p = entry[:4]
            if len(b) != NUM_CLASSES or len(p) != NUM_CLASSES or len(entry) > 5:
                return {}
            out[(str(ident), str(ifname))] = (tuple(int(x) for x in b), tuple(int(x) for x in p))
            if len(entry) == 5 and isinstance(entry[4], str) and entry[4]:
                kinds[str(ident)] = entry[4]
        runtimes.update(kinds)
        return out
    except (ValueError, TypeError):
        return {}


def _save(path: str, totals: dict[Key, Sums], runtimes: dict[str, str]) -> None:
    d = os.path.dirname(path)
    try:
        make_dirs(d, 0o700, journal.JournalError)
        fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-")
        with os.fdopen(fd, "w") as f:
            json.dump([[i, n, list(b), list(p), runtimes.get(i, "")] for (i, n), (b, p) in totals.items()], f)
        os.rename(tmp, path)
    except (OSError, journal.JournalError):
        pass  # the totals stay in memory; only a restart of tcflow would lose them
