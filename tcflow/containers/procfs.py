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

import os
from typing import Any, Optional

from tcflow.containers import docker, lxc, oci, podman
from tcflow.containers.base import Container, Group, Pattern, Runtime, netns_inode, pids, read_small

# (runtime, pattern over one cgroup path); the first match wins
CGROUP_PATTERNS: tuple[Pattern, ...] = (docker.PATTERNS + oci.PATTERNS + podman.PATTERNS + oci.KUBEPODS
                                        + lxc.PATTERNS)


def parse_cgroup(text: str) -> Optional[tuple[str, str]]:
    """(runtime, id) from the text of /proc/PID/cgroup, or None."""
    for line in text.splitlines()[:64]:
        path = line.split(":", 2)[-1]
        if "/user.slice" in path or "/user@" in path:
            return None  # a user's own delegated subtree: any name can be made there
        for runtime, pat in CGROUP_PATTERNS:
            m = pat.search(path)
            if m:
                return runtime, m.group(1)
    return None


def scan(proc: str = "/proc", own: str = "/proc/self/ns/net",
         daemons: Optional[list[list[str]]] = None) -> list[Group]:
    """Every running container, grouped by network namespace, host-network
    containers in a group of their own (``host_network``). ``own``: the
    namespace tcflow runs in, which is the host's. ``daemons``: dockerds()'s
    answer, when the caller has it already."""
    # The host: the namespace tcflow runs in (an agent with hostNetwork), and
    # init's where it can be read (it cannot always: a sandboxed init). A
    # container in either is a host-network one, never counted: its
    # interfaces are the host's own.
    host_inos = {os.stat(own).st_ino, netns_inode(proc, 1)} - {None}
    named = lxc.Named()
    runtimes: dict[str, Runtime] = {"docker": docker.Docker(proc, daemons), "containerd": oci.Oci(), "cri-o": oci.Oci(),
                                    "podman": podman.Podman(), "lxc": named, "systemd-nspawn": named}
    seen: dict[str, tuple[Container, int]] = {}  # id -> (container, pid that stands for it)
    for pid in pids(proc):
        raw = read_small(f"{proc}/{pid}/cgroup", 65536)
        if not raw:
            continue
        found = parse_cgroup(raw.decode(errors="replace"))
        if found is None or found[1] in seen:
            continue
        runtime, cid = found
        rec = runtimes[runtime].identify(runtime, cid, pid)
        if rec is None:
            continue  # no record, or not running: nothing to trust
        seen[cid] = rec
    groups: dict[tuple[str, Any], Group] = {}
    for container, pid in seen.values():
        ino = netns_inode(proc, pid)
        if ino is None:
            continue  # gone meanwhile
        host = ino in host_inos
        key = ("host", container.id) if host else ("netns", ino)
        g = groups.setdefault(key, Group(ino, pid, host))
        g.containers.append(container)
        g.pid = min(g.pid, pid)
    return sorted(groups.values(), key=lambda g: g.label)


