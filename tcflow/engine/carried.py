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
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from operator import add
from typing import Optional

from tcflow.bpf.reader import Sums
from tcflow.containers import Group, read_small
from tcflow.host import journal
from tcflow.host.interfaces import Interface
from tcflow.model.classes import NUM_CLASSES
from tcflow.system.safepath import make_dirs, trusted_dir

MAX_CARRIED = 4096  # (identity, interface) totals kept for containers that may come back
MAX_CARRIED_FILE = 16 << 20
ZERO: Sums = ((0,) * NUM_CLASSES, (0,) * NUM_CLASSES)
Key = tuple[str, str]  # (container identity, interface name)


class CarriedTotals:
    """``pin_dir``: keep the totals across restarts of tcflow (--pin)."""

    def __init__(self, pin_dir: Optional[str] = None, limit: int = MAX_CARRIED):
        self.limit = limit
        self.store = carried_path(pin_dir) if pin_dir else None
        self.totals: dict[Key, Sums] = _load(self.store, limit) if self.store else {}

    def add(self, key: Key, sums: Sums) -> None:
        """Keep the final counts of one interface of a container's life."""
        cb, cp = self.totals.pop(key, ZERO)  # re-inserted last: the oldest go first
        self.totals[key] = (tuple(map(add, cb, sums[0])), tuple(map(add, cp, sums[1])))
        while len(self.totals) > self.limit:
            del self.totals[next(iter(self.totals))]
        if self.store:
            _save(self.store, self.totals)

    def plus(self, key: Key, sums: Sums) -> Sums:
        """Live counts plus what earlier lives of the same container counted."""
        cb, cp = self.totals.get(key, ZERO)
        if cb is ZERO[0]:
            return sums
        return tuple(map(add, cb, sums[0])), tuple(map(add, cp, sums[1]))


def carried_key(group: Group, interface: Interface) -> Key:
    """(container identity, interface name) of a container's interface: under
    the name it was counted as, since a runtime renames a stopping
    container's eth0 back to vethXXX before it takes it away."""
    return group.key, interface.attachment.bound_as or interface.ifname


def carried_path(pin_dir: str) -> str:
    tag = hashlib.sha256(pin_dir.encode()).hexdigest()[:16]
    return os.path.join(journal.RUN_DIR, "carried", f"{tag}.json")


def _load(path: str, limit: int) -> dict[Key, Sums]:
    """The carried totals a pinned tcflow wrote, or none: absent, torn or not root's alone."""
    try:
        if not trusted_dir(os.path.dirname(path), journal.JournalError):
            return {}
    except journal.JournalError:
        return {}
    raw = read_small(path, MAX_CARRIED_FILE)
    try:
        doc = json.loads(raw) if raw else []
        out = {}
        for ident, ifname, b, p in doc[-limit:]:
            if len(b) != NUM_CLASSES or len(p) != NUM_CLASSES:
                return {}
            out[(str(ident), str(ifname))] = (tuple(int(x) for x in b), tuple(int(x) for x in p))
        return out
    except (ValueError, TypeError):
        return {}


def _save(path: str, totals: dict[Key, Sums]) -> None:
    d = os.path.dirname(path)
    try:
        make_dirs(d, 0o700, journal.JournalError)
        fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-")
        with os.fdopen(fd, "w") as f:
            json.dump([[i, n, list(b), list(p)] for (i, n), (b, p) in totals.items()], f)
        os.rename(tmp, path)
    except (OSError, journal.JournalError):
        pass  # the totals stay in memory; only a restart of tcflow would lose them
