"""What every runtime module shares: the Container and Group records, the
interface a runtime module offers (Runtime), and careful readers of /proc
and of runtime state.

Everything read here is hostile until checked: files read only in
directories no other user could have written, without following links,
bounded in size, names shown with ``names.shown``.
"""

from __future__ import annotations

import json
import os
import re
import stat
from dataclasses import dataclass, field
from typing import Any, Optional, Protocol

from tcflow.model.errors import TcflowError
from tcflow.model.names import shown
from tcflow.system.safepath import trusted_dir

MAX_FILE = 1 << 20
HEX64 = r"([0-9a-f]{64})"
Pattern = tuple[str, "re.Pattern[str]"]  # (runtime, pattern over one cgroup path)


@dataclass(frozen=True)
class Container:
    """One container: ``id`` (the runtime's, full), ``name`` ("" if unknown),
    ``runtime``, and for Kubernetes ``pod``/``namespace`` ("" otherwise)."""

    id: str
    runtime: str
    name: str = ""
    pod: str = ""
    namespace: str = ""

    @property
    def short_id(self) -> str:
        return self.id[:12]

    @property
    def display(self) -> str:
        return self.name or self.short_id


@dataclass
class Group:
    """Containers in one network namespace (a pod's share one): the
    namespace's inode, a pid whose ``/proc/PID/ns/net`` opens it, and whether
    it is the host's own (host-network containers)."""

    inode: int
    pid: int
    host_network: bool
    containers: list[Container] = field(default_factory=list)

    @property
    def key(self) -> str:
        """A stable identity for the counters: the sorted container ids."""
        return ",".join(sorted(c.id for c in self.containers))

    @property
    def label(self) -> str:
        """How the JSON keys and the table name it: the pod, else the container(s)."""
        pods = {c.pod for c in self.containers if c.pod}
        if len(pods) == 1 and not self.host_network:
            ns = next(c.namespace for c in self.containers if c.pod)
            return f"{ns}/{pods.pop()}" if ns else pods.pop()
        return "+".join(sorted(shown(c.display) for c in self.containers))

    def labels(self) -> dict[str, str]:
        """Metric labels and JSON fields: one container's, or all of a pod's joined with ","."""
        cs = sorted(self.containers, key=lambda c: c.id)
        return {"container_id": ",".join(c.id for c in cs),
                "container": ",".join(shown(c.name) for c in cs),
                "runtime": ",".join(sorted({c.runtime for c in cs})),
                "pod": ",".join(sorted({shown(c.pod) for c in cs if c.pod})),
                "namespace": ",".join(sorted({shown(c.namespace) for c in cs if c.namespace}))}


class Runtime(Protocol):
    """One runtime module's part in a scan (made anew for each scan, so that
    what it reads once, such as a daemon's data root, is read once a scan).

    ``identify``: the container behind a cgroup path this module's patterns
    matched, and the pid that stands for it; None when the runtime's own
    state does not vouch for it (a process that only names a container's
    cgroup gets nothing)."""

    def identify(self, runtime: str, cid: str, pid: int) -> Optional[tuple[Container, int]]: ...


def read_small(path: str, limit: int = MAX_FILE) -> Optional[bytes]:
    """A regular file's bytes, never through a symlink, at most ``limit``; None if unreadable."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) and not path.startswith("/proc/"):
            return None
        data = os.read(fd, limit + 1)
        return None if len(data) > limit else data
    except OSError:
        return None
    finally:
        os.close(fd)


def read_json(path: str) -> Any:
    raw = read_small(path)
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def trusted(path: str) -> bool:
    try:
        return trusted_dir(path, TcflowError)
    except TcflowError:
        return False


def option(args: list[str], name: str) -> Optional[str]:
    for i, a in enumerate(args):
        if a == name and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


def owner(proc: str, pid: int) -> Optional[int]:
    raw = read_small(f"{proc}/{pid}/status", 65536) or b""
    m = re.search(rb"^Uid:\s+(\d+)", raw, re.M)
    return int(m.group(1)) if m else None


def pids(proc: str) -> list[int]:
    try:
        return sorted(int(n) for n in os.listdir(proc) if n.isdigit())
    except OSError:
        return []


def netns_inode(proc: str, pid: int) -> Optional[int]:
    try:
        return os.stat(f"{proc}/{pid}/ns/net").st_ino
    except OSError:
        return None
