"""Docker: a container's record is its ``config.v2.json`` under a data root
(/var/lib/docker, or the --data-root of a dockerd that root runs, read off
its command line). The process that stands for a container is the one its
own record names (State.Pid); while it starts, a process that descends from
root's containerd shim for that id."""

from __future__ import annotations

import os
import re
from typing import Iterable, Optional

from tcflow.containers.base import (
    HEX64,
    Container,
    Pattern,
    netns_inode,
    option,
    owner,
    pids,
    read_json,
    read_small,
    trusted,
)

DOCKER_ID = re.compile(r"[0-9a-f]{64}")
PATTERNS: tuple[Pattern, ...] = (
    ("docker", re.compile(r"/docker-" + HEX64 + r"\.scope(?:/|$)")),
    ("docker", re.compile(r"/docker/" + HEX64 + r"(?:/|$)")),
)


def dockerds(proc: str = "/proc", candidates: Optional[list[int]] = None) -> list[list[str]]:
    """The command lines of the dockerd processes root runs (one walk of
    /proc, or only the ``candidates`` a ProcCache found)."""
    out = []
    for pid in pids(proc) if candidates is None else candidates:
        raw = read_small(f"{proc}/{pid}/cmdline", 65536)
        if raw and raw.split(b"\0", 1)[0].endswith(b"dockerd") and owner(proc, pid) == 0:
            out.append([a.decode(errors="replace") for a in raw.split(b"\0") if a])
    return out


def docker_roots(proc: str = "/proc", found: Optional[list[list[str]]] = None) -> list[str]:
    """Docker's data roots: /var/lib/docker, and any --data-root of a dockerd run by root."""
    roots = ["/var/lib/docker"] + [r for args in (dockerds(proc) if found is None else found)
                                   if (r := option(args, "--data-root"))]
    return [r for r in dict.fromkeys(os.path.normpath(r) for r in roots if r.startswith("/")) if trusted(r)]


def record(cid: str, roots: Iterable[str], proc: str = "/proc",
            candidate: int = 0) -> Optional[tuple[Container, int]]:
    """Docker's record of a container: (Container, the pid that stands for
    it). Running: its State.Pid. Still starting (the record does not say
    running yet, and the runtime is wiring its network): ``candidate``, if
    that process descends from the containerd shim root runs for this id."""
    for root in roots:
        doc = read_json(os.path.join(root, "containers", cid, "config.v2.json"))
        if not isinstance(doc, dict):
            continue
        state = doc.get("State")
        if not isinstance(state, dict):
            return None
        pid = state.get("Pid")
        if not state.get("Running") or not isinstance(pid, int) or pid <= 0:
            if not candidate or not _shim_owns(proc, candidate, cid):
                return None
            pid = candidate
        name = str(doc.get("Name") or "").lstrip("/")[:256]
        labels = (doc.get("Config") or {}).get("Labels") or {}
        labels = labels if isinstance(labels, dict) else {}
        return Container(cid, "docker", name, str(labels.get("io.kubernetes.pod.name", ""))[:256],
                         str(labels.get("io.kubernetes.pod.namespace", ""))[:256]), pid
    return None


def removed(cid: str, roots: Iterable[str]) -> bool:
    """True if no data root in ``roots`` holds a record of container ``cid``
    any more: removed (`docker rm`, `docker run --rm`), it never comes back.
    False for an id that is not Docker's (64 hex digits) and with no root."""
    roots = list(roots)
    if not roots or not DOCKER_ID.fullmatch(cid):
        return False
    return not any(os.path.lexists(os.path.join(root, "containers", cid)) for root in roots)


def _shim_owns(proc: str, pid: int, cid: str, depth: int = 6) -> bool:
    """True if ``pid`` descends from a root-owned containerd shim started for
    container ``cid`` (a user cannot make its processes the children of
    root's shim), and is already in a network namespace of its own: runc's
    own helper processes, in the shim's namespace, are not the container."""
    own = netns_inode(proc, pid)
    for _ in range(depth):
        raw = read_small(f"{proc}/{pid}/stat", 4096)
        if not raw or b")" not in raw:
            return False
        ppid = int(raw.rsplit(b")", 1)[1].split()[1])
        if ppid <= 1:
            return False
        cmd = read_small(f"{proc}/{ppid}/cmdline", 65536) or b""
        args = cmd.split(b"\0")
        if args and b"containerd-shim" in os.path.basename(args[0]) and owner(proc, ppid) == 0:
            ours = any(a == b"-id" and i + 1 < len(args) and args[i + 1] == cid.encode() for i, a in enumerate(args))
            return ours and own is not None and own != netns_inode(proc, ppid)
        pid = ppid
    return False


def netns_dirs(proc: str = "/proc", found: Optional[list[list[str]]] = None) -> list[str]:
    """Where runtimes make a new container's namespace file before they wire
    its interfaces: Docker's <exec-root>/netns, and /run/netns (CNI, `ip netns`).
    A file appearing there is the cue to look for a new container at once."""
    dirs = ["/run/netns"] + [os.path.join(option(args, "--exec-root") or "/var/run/docker", "netns")
                             for args in (dockerds(proc) if found is None else found)]
    return [d for d in dict.fromkeys(dirs) if trusted(d)]



class Docker:
    """The Runtime for Docker: its data roots read once a scan."""

    def __init__(self, proc: str = "/proc", daemons: Optional[list[list[str]]] = None):
        self.proc = proc
        self.roots = docker_roots(proc, daemons)

    def identify(self, runtime: str, cid: str, pid: int) -> Optional[tuple[Container, int]]:
        return record(cid, self.roots, self.proc, pid)
