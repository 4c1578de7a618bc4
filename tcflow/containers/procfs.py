"""Find the containers running on this host, without asking their runtime.

What the kernel and the runtimes keep on disk is enough:

- ``/proc/PID/cgroup``: the runtime and the container id, from the cgroup
  path each runtime makes (Docker, containerd and CRI-O under Kubernetes,
  Podman, LXC, systemd-nspawn);
- ``/proc/PID/ns/net``: which network namespace the container is in; the
  containers of a pod share one, and are one entry that names them all;
- names from the runtime's own files: Docker's ``config.v2.json`` (its data
  root is read off a root-owned ``dockerd`` command line, else
  /var/lib/docker), the OCI bundle's ``config.json`` annotations (Kubernetes
  pod name, namespace and container name under containerd and CRI-O), and
  Podman's ``containers.json``. LXC and systemd-nspawn name their cgroups.

Everything read here is hostile until checked: cgroup paths a user can make
under its own delegated subtree (user.slice is skipped), files read only in
directories no other user could have written, without following links,
bounded in size, names shown with ``names.shown``. For Docker, the process
that stands for a container is the one its own record names (State.Pid):
a process that only claims a container's cgroup name gets nothing.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any, Callable, Optional

from tcflow.containers import docker, lxc, oci, podman
from tcflow.containers.base import Container, Group, Pattern, Runtime, netns_inode, read_small

# (runtime, pattern over one cgroup path); the first match wins
CGROUP_PATTERNS: tuple[Pattern, ...] = (docker.PATTERNS + oci.PATTERNS + podman.PATTERNS + oci.KUBEPODS
                                        + lxc.PATTERNS)


def parse_cgroup(text: str) -> Optional[tuple[str, str]]:
    """(runtime, id) from the text of /proc/PID/cgroup, or None."""
    for line in text.splitlines()[:64]:
        path = line.split(":", 2)[-1]
        if "/user.slice" in path or "/user@" in path:
            return None  # a user's own delegated subtree: any name can be made there
        found = container_cgroup(path)
        if found is not None:
            return found
    return None


def container_cgroup(path: str) -> Optional[tuple[str, str]]:
    """(runtime, id) if a cgroup path is (or is inside) a container's own."""
    if "/user.slice" in path or "/user@" in path:
        return None
    for runtime, pat in CGROUP_PATTERNS:
        m = pat.search(path)
        if m:
            return runtime, m.group(1)
    return None


CLOCK_BOOTTIME = getattr(time, "CLOCK_BOOTTIME", 7)
CLK_TCK = os.sysconf("SC_CLK_TCK")


class ProcCache:
    """What discovery reads of each process, read once per process, not once
    per scan: a node with 10,000 processes would otherwise cost a file read
    per process four times a second.

    A process is known by its pid and the inode of its /proc entry, which
    the directory listing itself gives (a pid used again is a new entry, a
    new inode). What a process says is read again while it is young
    (``YOUNG_S`` from its start, or from the event that named it: a runtime
    moves a new process into its container's cgroup and execs it just after
    it starts), and everything every ``FULL_S`` (a process moved later, by
    anyone, is seen then).

    When to list /proc, between the full passes:

    - ``events`` (discovery watches the cgroup tree, cgroups.py): never on
      its own. The events name the new containers' processes (``add``); a
      caller that needs a listing asks for one (``list_due``).
    - otherwise: when /proc/loadavg's last pid (the last one the kernel
      handed out) moved, since a new container needs a new process. On a
      busy node that is every time."""

    YOUNG_S = 5.0
    FULL_S = 60.0
    # events: while a process is young, a scan at most this often (its
    # runtime writes the container's record a moment after; the process
    # itself was named by its cgroup's event and counted already)
    YOUNG_RESCAN_S = 0.25

    def __init__(self, proc: str = "/proc", clock: Callable[[], float] = lambda: time.clock_gettime(CLOCK_BOOTTIME),
                 events: bool = False):
        """``clock``: seconds since boot, the clock of a process's start time."""
        self.proc, self.clock, self.events = proc, clock, events
        # pid -> (/proc inode, young until (boot clock), cgroup's (runtime, id) or None, a dockerd's command line)
        self.entries: dict[int, tuple[int, float, Optional[tuple[str, str]], bool]] = {}
        self.records: dict[tuple[str, str, int, int], tuple[Container, int]] = {}  # identify(), per live process
        self.full_at = -math.inf
        self.last_pid: Optional[bytes] = None
        self.young_until = -math.inf
        self.list_due = False
        self._young_scan = -math.inf
        self.reads = 0  # processes read (cgroup and command line): what a scan cost
        self.listings = 0  # listings of /proc

    def refresh(self) -> bool:
        """Bring the entries up to date; False if nothing could have changed
        (no process started since the last time, none young, no full pass due)."""
        now = self.clock()
        full = now - self.full_at >= self.FULL_S
        if self.events:
            if not full and not self.list_due:
                return self._reread_young(now) if now < self.young_until else False
        else:
            words = (read_small(f"{self.proc}/loadavg", 256) or b"").split()
            last_pid = words[-1] if words else None
            if not full and last_pid is not None and last_pid == self.last_pid:
                if now >= self.young_until:
                    return False
                return self._reread_young(now)  # no new process: only the young ones can have changed
            self.last_pid = last_pid
        self.list_due = False
        self.listings += 1
        if full:
            self.full_at = now
            self.records.clear()
        fresh: dict[int, tuple[int, float, Optional[tuple[str, str]], bool]] = {}
        try:
            listing = os.scandir(self.proc)
        except OSError:
            return False
        with listing:
            for e in listing:
                if not e.name.isdigit():
                    continue
                pid = int(e.name)
                try:
                    ino = e.inode()
                except OSError:
                    continue
                old = self.entries.get(pid)
                if old is not None and old[0] == ino and not full and now >= old[1]:
                    fresh[pid] = old
                    continue
                fresh[pid] = self._read(pid, ino, old)
        self.entries = fresh
        alive = {(pid, e[0]) for pid, e in fresh.items()}
        self.records = {k: v for k, v in self.records.items() if (k[2], k[3]) in alive}
        self.young_until = max((e[1] for e in fresh.values()), default=-math.inf)
        return True

    def add(self, pids: list[int]) -> bool:
        """Read the processes an event named (a new container cgroup's) now,
        without listing /proc; young from now. True if any was read."""
        now = self.clock()
        added = False
        for pid in pids:
            try:
                ino = os.stat(f"{self.proc}/{pid}").st_ino
            except OSError:
                continue  # gone already
            old = self.entries.get(pid)
            if old is not None and old[0] == ino and old[2] is not None:
                continue  # read already, in its container
            self.entries[pid] = self._read(pid, ino, None, young=now + self.YOUNG_S)
            self.young_until = max(self.young_until, now + self.YOUNG_S)
            added = True
        return added

    def _read(self, pid: int, ino: int, old: Optional[tuple[int, float, Optional[tuple[str, str]], bool]],
              young: Optional[float] = None) -> tuple[int, float, Optional[tuple[str, str]], bool]:
        self.reads += 1
        raw = read_small(f"{self.proc}/{pid}/cgroup", 65536)
        found = parse_cgroup(raw.decode(errors="replace")) if raw else None
        cmd = read_small(f"{self.proc}/{pid}/cmdline", 4096) or b""
        if young is None:
            if old is not None and old[0] == ino:
                young = old[1]
            elif not cmd:  # a kernel thread (or a zombie): never in a container, never young
                young = -math.inf
            else:
                young = _started(self.proc, pid) + self.YOUNG_S
        return ino, young, found, cmd.split(b"\0", 1)[0].endswith(b"dockerd")

    def quiet_s(self) -> float:
        """Events mode: how long refresh() will find nothing to do on its
        own (until the minute's full pass, or the next rescan of a young
        process); 0 when asked for a listing, and in the other modes."""
        if not self.events or self.list_due:
            return 0.0
        now = self.clock()
        until = self.full_at + self.FULL_S
        if now < self.young_until:
            until = min(until, self._young_scan + self.YOUNG_RESCAN_S)
        return max(0.0, until - now)

    def _reread_young(self, now: float) -> bool:
        """Read the young processes again, without listing /proc. With events
        there is nothing to read: a process that joins a container's cgroup
        later is named by the cgroup's event (``add``); the young only make
        the caller scan again (a runtime writes its record a moment after)."""
        if self.events:
            if now - self._young_scan < self.YOUNG_RESCAN_S:
                return False  # not every 10 ms of a burst: the node's churn would keep it scanning
            self._young_scan = now
            return True
        for pid, (ino, young, _, _) in list(self.entries.items()):
            if now >= young:
                continue
            self.reads += 1
            raw = read_small(f"{self.proc}/{pid}/cgroup", 65536)
            if raw is None:
                continue  # gone: the next listing drops it
            cmd = read_small(f"{self.proc}/{pid}/cmdline", 4096) or b""
            self.entries[pid] = (ino, young, parse_cgroup(raw.decode(errors="replace")),
                                 cmd.split(b"\0", 1)[0].endswith(b"dockerd"))
        return True

    def forget(self, pid: int) -> None:
        """A process found gone: its entry and records go (the next listing would drop them)."""
        self.entries.pop(pid, None)
        self.records = {k: v for k, v in self.records.items() if k[2] != pid}

    def dockerd_pids(self) -> list[int]:
        return sorted(pid for pid, e in self.entries.items() if e[3])

    def unknown_young(self, known: set[str]) -> set[str]:
        """The containers of young processes whose ids are not in ``known``."""
        now = self.clock()
        return {e[2][1] for e in self.entries.values() if e[2] is not None and e[2][1] not in known and now < e[1]}

    def in_containers(self) -> list[tuple[int, int, tuple[str, str]]]:
        """(pid, /proc inode, (runtime, id)) of every process in a container's cgroup, by pid."""
        return sorted((pid, e[0], e[2]) for pid, e in self.entries.items() if e[2] is not None)


def scan(proc: str = "/proc", own: str = "/proc/self/ns/net",
         daemons: Optional[list[list[str]]] = None, cache: Optional[ProcCache] = None) -> list[Group]:
    """Every running container, grouped by network namespace, host-network
    containers in a group of their own (``host_network``). ``own``: the
    namespace tcflow runs in, which is the host's. ``daemons``: dockerds()'s
    answer, when the caller has it already. ``cache``: what earlier scans
    read (refreshed by the caller), so that only new processes are read."""
    # The host: the namespace tcflow runs in (an agent with hostNetwork), and
    # init's where it can be read (it cannot always: a sandboxed init). A
    # container in either is a host-network one, never counted: its
    # interfaces are the host's own.
    host_inos = {os.stat(own).st_ino, netns_inode(proc, 1)} - {None}
    named = lxc.Named()
    runtimes: dict[str, Runtime] = {"docker": docker.Docker(proc, daemons), "containerd": oci.Oci(), "cri-o": oci.Oci(),
                                    "podman": podman.Podman(), "lxc": named, "systemd-nspawn": named}
    seen: dict[str, tuple[Container, int, int]] = {}  # id -> (container, pid that stands for it, its netns)
    if cache is None:  # every process read now
        cache = ProcCache(proc)
        cache.refresh()
    for pid, entry_ino, found in cache.in_containers():
        if found[1] in seen:
            continue
        runtime, cid = found
        key = (runtime, cid, pid, entry_ino)
        rec = cache.records.get(key) or runtimes[runtime].identify(runtime, cid, pid)
        if rec is None:
            if not os.path.exists(f"{proc}/{pid}"):
                cache.forget(pid)  # gone: no reason to look again
            continue  # no record, or not running: nothing to trust
        ino = netns_inode(proc, rec[1])
        if ino is None:  # gone (a restarted container's old process): its new one may follow
            cache.forget(pid)
            continue
        if rec[1] == pid:
            cache.records[key] = rec  # its own record names it: stays for its process
        seen[cid] = (*rec, ino)
    groups: dict[tuple[str, Any], Group] = {}
    for container, pid, ino in seen.values():
        host = ino in host_inos
        group_key = ("host", container.id) if host else ("netns", ino)
        g = groups.setdefault(group_key, Group(ino, pid, host))
        g.containers.append(container)
        g.pid = min(g.pid, pid)
    return sorted(groups.values(), key=lambda g: g.label)


def _started(proc: str, pid: int) -> float:
    """When a process started, in seconds since boot (field 22 of its stat,
    after the command name, which may hold anything); 0 if unreadable."""
    raw = read_small(f"{proc}/{pid}/stat", 4096) or b""
    tail = raw[raw.rfind(b")") + 1:].split()
    try:
        return int(tail[19]) / CLK_TCK
    except (IndexError, ValueError):
        return 0.0
