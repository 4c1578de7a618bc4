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

import json
import os
import re
import stat
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

from .errors import TcflowError
from .names import shown
from .safepath import trusted_dir

MAX_FILE = 1 << 20
HEX64 = r"([0-9a-f]{64})"
# (runtime, pattern over one cgroup path); the first match wins
CGROUP_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("docker", re.compile(r"/docker-" + HEX64 + r"\.scope(?:/|$)")),
    ("docker", re.compile(r"/docker/" + HEX64 + r"(?:/|$)")),
    ("containerd", re.compile(r"/cri-containerd-" + HEX64 + r"\.scope(?:/|$)")),
    ("cri-o", re.compile(r"/crio-" + HEX64 + r"\.scope(?:/|$)")),
    ("podman", re.compile(r"/libpod-" + HEX64 + r"\.scope(?:/|$)")),
    ("containerd", re.compile(r"/kubepods[^/]*/(?:[^/]+/)*" + HEX64 + r"(?:/|$)")),
    ("lxc", re.compile(r"/lxc\.payload\.([A-Za-z0-9_.-]{1,64})(?:/|$)")),
    ("lxc", re.compile(r"^/lxc/([A-Za-z0-9_.-]{1,64})(?:/|$)")),
    ("systemd-nspawn", re.compile(r"/machine-([A-Za-z0-9_.-]{1,64})\.scope(?:/|$)")),
)
CONTAINERD_STATE = "/run/containerd/io.containerd.runtime.v2.task"
CRIO_STATE = ("/run/containers/storage/overlay-containers", "/var/lib/containers/storage/overlay-containers")
PODMAN_STATE = ("/var/lib/containers/storage/overlay-containers/containers.json",)


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


def _json(path: str) -> Any:
    raw = read_small(path)
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _trusted(path: str) -> bool:
    try:
        return trusted_dir(path, TcflowError)
    except TcflowError:
        return False


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


def dockerds(proc: str = "/proc") -> list[list[str]]:
    """The command lines of the dockerd processes root runs (one walk of /proc)."""
    out = []
    for pid in _pids(proc):
        raw = read_small(f"{proc}/{pid}/cmdline", 65536)
        if raw and raw.split(b"\0", 1)[0].endswith(b"dockerd") and _owner(proc, pid) == 0:
            out.append([a.decode(errors="replace") for a in raw.split(b"\0") if a])
    return out


def _option(args: list[str], name: str) -> Optional[str]:
    for i, a in enumerate(args):
        if a == name and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


def docker_roots(proc: str = "/proc", found: Optional[list[list[str]]] = None) -> list[str]:
    """Docker's data roots: /var/lib/docker, and any --data-root of a dockerd run by root."""
    roots = ["/var/lib/docker"] + [r for args in (dockerds(proc) if found is None else found)
                                   if (r := _option(args, "--data-root"))]
    return [r for r in dict.fromkeys(os.path.normpath(r) for r in roots if r.startswith("/")) if _trusted(r)]


def _owner(proc: str, pid: int) -> Optional[int]:
    raw = read_small(f"{proc}/{pid}/status", 65536) or b""
    m = re.search(rb"^Uid:\s+(\d+)", raw, re.M)
    return int(m.group(1)) if m else None


def _pids(proc: str) -> list[int]:
    try:
        return sorted(int(n) for n in os.listdir(proc) if n.isdigit())
    except OSError:
        return []


def _docker(cid: str, roots: Iterable[str], proc: str = "/proc",
            candidate: int = 0) -> Optional[tuple[Container, int]]:
    """Docker's record of a container: (Container, the pid that stands for
    it). Running: its State.Pid. Still starting (the record does not say
    running yet, and the runtime is wiring its network): ``candidate``, if
    that process descends from the containerd shim root runs for this id."""
    for root in roots:
        doc = _json(os.path.join(root, "containers", cid, "config.v2.json"))
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


def _shim_owns(proc: str, pid: int, cid: str, depth: int = 6) -> bool:
    """True if ``pid`` descends from a root-owned containerd shim started for
    container ``cid`` (a user cannot make its processes the children of
    root's shim), and is already in a network namespace of its own: runc's
    own helper processes, in the shim's namespace, are not the container."""
    own = _netns_inode(proc, pid)
    for _ in range(depth):
        raw = read_small(f"{proc}/{pid}/stat", 4096)
        if not raw or b")" not in raw:
            return False
        ppid = int(raw.rsplit(b")", 1)[1].split()[1])
        if ppid <= 1:
            return False
        cmd = read_small(f"{proc}/{ppid}/cmdline", 65536) or b""
        args = cmd.split(b"\0")
        if args and b"containerd-shim" in os.path.basename(args[0]) and _owner(proc, ppid) == 0:
            ours = any(a == b"-id" and i + 1 < len(args) and args[i + 1] == cid.encode() for i, a in enumerate(args))
            return ours and own is not None and own != _netns_inode(proc, ppid)
        pid = ppid
    return False


def netns_dirs(proc: str = "/proc", found: Optional[list[list[str]]] = None) -> list[str]:
    """Where runtimes make a new container's namespace file before they wire
    its interfaces: Docker's <exec-root>/netns, and /run/netns (CNI, `ip netns`).
    A file appearing there is the cue to look for a new container at once."""
    dirs = ["/run/netns"] + [os.path.join(_option(args, "--exec-root") or "/var/run/docker", "netns")
                             for args in (dockerds(proc) if found is None else found)]
    return [d for d in dict.fromkeys(dirs) if _trusted(d)]


def _annotations(cid: str) -> dict[str, str]:
    """The OCI bundle's annotations (containerd under Kubernetes, CRI-O)."""
    candidates = []
    if _trusted(CONTAINERD_STATE):
        try:
            candidates += [os.path.join(CONTAINERD_STATE, ns, cid, "config.json")
                           for ns in os.listdir(CONTAINERD_STATE)]
        except OSError:
            pass
    candidates += [os.path.join(d, cid, "userdata", "config.json") for d in CRIO_STATE if _trusted(d)]
    for path in candidates:
        doc = _json(path)
        if isinstance(doc, dict) and isinstance(doc.get("annotations"), dict):
            return {str(k): str(v)[:256] for k, v in doc["annotations"].items()}
    return {}


def _podman_names() -> dict[str, str]:
    out: dict[str, str] = {}
    for path in PODMAN_STATE:
        if not _trusted(os.path.dirname(path)):
            continue
        doc = _json(path)
        for entry in doc if isinstance(doc, list) else []:
            if isinstance(entry, dict) and isinstance(entry.get("names"), list) and entry["names"]:
                out[str(entry.get("id"))] = str(entry["names"][0])[:256]
    return out


def _named(runtime: str, cid: str, podman: dict[str, str]) -> Container:
    if runtime in ("lxc", "systemd-nspawn"):
        return Container(cid, runtime, cid)
    if runtime == "podman":
        return Container(cid, runtime, podman.get(cid, ""))
    ann = _annotations(cid)
    name = ann.get("io.kubernetes.cri.container-name") or ann.get("io.kubernetes.container.name", "")
    pod = ann.get("io.kubernetes.cri.sandbox-name") or ann.get("io.kubernetes.pod.name", "")
    ns = ann.get("io.kubernetes.cri.sandbox-namespace") or ann.get("io.kubernetes.pod.namespace", "")
    if not name and ann.get("io.kubernetes.cri.container-type") == "sandbox":
        name = "POD"  # the pause container that holds a pod's namespace
    return Container(cid, runtime, name, pod, ns)


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
    host_inos = {os.stat(own).st_ino, _netns_inode(proc, 1)} - {None}
    roots = docker_roots(proc, daemons)
    podman = _podman_names()
    seen: dict[str, tuple[Container, int]] = {}  # id -> (container, pid that stands for it)
    for pid in _pids(proc):
        raw = read_small(f"{proc}/{pid}/cgroup", 65536)
        if not raw:
            continue
        found = parse_cgroup(raw.decode(errors="replace"))
        if found is None or found[1] in seen:
            continue
        runtime, cid = found
        if runtime == "docker":
            rec = _docker(cid, roots, proc, pid)
            if rec is None:
                continue  # no record, or not running: nothing to trust
            seen[cid] = rec
        else:
            seen[cid] = (_named(runtime, cid, podman), pid)
    groups: dict[tuple[str, Any], Group] = {}
    for container, pid in seen.values():
        ino = _netns_inode(proc, pid)
        if ino is None:
            continue  # gone meanwhile
        host = ino in host_inos
        key = ("host", container.id) if host else ("netns", ino)
        g = groups.setdefault(key, Group(ino, pid, host))
        g.containers.append(container)
        g.pid = min(g.pid, pid)
    return sorted(groups.values(), key=lambda g: g.label)


def _netns_inode(proc: str, pid: int) -> Optional[int]:
    try:
        return os.stat(f"{proc}/{pid}/ns/net").st_ino
    except OSError:
        return None
