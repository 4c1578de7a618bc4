"""Container cgroups as they are made: inotify on the cgroup hierarchy.

A runtime makes a container's cgroup (``/docker/<id>``,
``system.slice/docker-<id>.scope``, ``kubepods.slice/.../cri-containerd-<id>.scope``,
``machine.slice/libpod-<id>.scope``, ``lxc.payload.<name>``...) before the
container's first process runs in it. Watching the directories where
runtimes make them tells discovery (discovery.py) that a container started,
and which: what it then reads is that cgroup's ``cgroup.procs`` and those
processes, not all of /proc. The cost follows the containers, not the
processes on the host.

Which directories are watched: the root of the cgroup v2 hierarchy (else of
one v1 hierarchy), and below it every directory that could still hold a
container cgroup further down (a ``.slice``, ``kubepods/burstable/pod<uid>``,
``docker``), at most ``MAX_DEPTH`` deep and ``MAX_WATCHES`` in all. Never a
container's own cgroup (its inner cgroups are not containers), never a
service's, a session's or a user's (``user.slice`` is the users' own,
delegated subtree: anyone can make directories there, and discovery never
trusts a name made there). Past the bound, or when the kernel's event queue
overflowed, ``complete`` is False and discovery's periodic full scan is
what finds the rest.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import struct
from typing import Callable, Iterator, Optional

IN_CREATE, IN_MOVED_TO, IN_ONLYDIR, IN_DONT_FOLLOW = 0x100, 0x80, 0x1000000, 0x2000000
IN_IGNORED, IN_Q_OVERFLOW, IN_ISDIR = 0x8000, 0x4000, 0x40000000
IN_NONBLOCK, IN_CLOEXEC = 0o4000, 0o2000000
EVENT = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len (then the name)
MAX_DEPTH = 6
MAX_WATCHES = 4096
MAX_PENDING = 4096
LISTED_PER_DIR = 16384  # entries read of one directory when it is first watched
SKIPPED = re.compile(r"^(user\.slice|user@.*|.*\.(service|scope|mount|socket|swap))$")


def octal_unescaped(field: str) -> str:
    """A mountinfo field: spaces and the like are written as \\040."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def hierarchies(mountinfo: str = "/proc/self/mountinfo") -> list[tuple[str, str]]:
    """(mount point, cgroup path at that point) of the hierarchy to watch:
    the cgroup v2 mount, else one v1 hierarchy (pids, the systemd one,
    memory, or any), else none."""
    v2, v1 = [], []
    try:
        with open(mountinfo, "rb") as f:
            lines = f.read(1 << 22).decode(errors="replace").splitlines()
    except OSError:
        return []
    for line in lines:
        pre, sep, post = line.partition(" - ")
        fields, tail = pre.split(), post.split()
        if not sep or len(fields) < 5 or len(tail) < 3:
            continue
        root, point = octal_unescaped(fields[3]), octal_unescaped(fields[4])
        if tail[0] == "cgroup2":
            v2.append((point, root))
        elif tail[0] == "cgroup":
            opts = set(tail[2].split(","))
            rank = next((i for i, o in enumerate(("pids", "name=systemd", "memory")) if o in opts), 3)
            v1.append((rank, point, root))
    if v2:
        return [v2[0]]
    return [(point, root) for _, point, root in sorted(v1)[:1]]


class CgroupEvents:
    """An inotify fd over the container-holding part of one cgroup
    hierarchy. ``drain()`` reads what happened; ``new`` collects the
    container cgroups made since (their path in the hierarchy, and the
    directory to read ``cgroup.procs`` from), in the order they came."""

    def __init__(self, is_container: Callable[[str], bool], roots: Optional[list[tuple[str, str]]] = None,
                 max_watches: int = MAX_WATCHES):
        """``is_container``: whether a cgroup path (as /proc/PID/cgroup names
        it) is a container's own. ``roots``: hierarchies() unless given."""
        self.is_container = is_container
        self.max_watches = max_watches
        self.new: dict[str, str] = {}  # cgroup path -> directory, made since the last take
        self.complete = True
        self.overflowed = False
        self._dirs: dict[int, tuple[str, str, int]] = {}  # wd -> (directory, cgroup path, depth)
        self._libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self._libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if self.fd < 0:
            return
        for point, root in (hierarchies() if roots is None else roots):
            self._watch(point, root, 0, initial=True)
        if not self._dirs:
            self.close()

    @property
    def active(self) -> bool:
        return self.fd >= 0

    @property
    def watched(self) -> int:
        return len(self._dirs)

    def _watch(self, directory: str, path: str, depth: int, initial: bool = False) -> None:
        """Watch one directory, then look at what is in it already (made
        before the watch: never missed); recursion bounded by MAX_DEPTH."""
        if len(self._dirs) >= self.max_watches:
            self.complete = False
            return
        wd = self._libc.inotify_add_watch(self.fd, os.fsencode(directory),
                                          IN_CREATE | IN_MOVED_TO | IN_ONLYDIR | IN_DONT_FOLLOW)
        if wd < 0:
            if ctypes.get_errno() in (errno.ENOSPC, errno.ENOMEM):
                self.complete = False  # the host's inotify limit: the full scan covers the rest
            return
        self._dirs[wd] = (directory, path, depth)
        for name in _subdirs(directory):
            self._met(directory, path, depth, name, initial)

    def _met(self, directory: str, path: str, depth: int, name: str, initial: bool) -> None:
        child_path = (path.rstrip("/") + "/" + name)
        child_dir = os.path.join(directory, name)
        if self.is_container(child_path):
            if not initial and len(self.new) < MAX_PENDING:
                self.new[child_path] = child_dir
            return
        if depth + 1 < MAX_DEPTH and not SKIPPED.match(name):
            self._watch(child_dir, child_path, depth + 1, initial)

    def drain(self, budget: int = 64) -> bool:
        """Read the events there are (at most ``budget`` reads); True if any."""
        if self.fd < 0:
            return False
        got = False
        for _ in range(budget):
            try:
                data = os.read(self.fd, 65536)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
            if not data:
                break
            got = True
            for wd, mask, name in _events(data):
                if mask & IN_Q_OVERFLOW:
                    self.overflowed = True  # some were lost: the caller scans everything once
                    continue
                if mask & IN_IGNORED:
                    self._dirs.pop(wd, None)  # the directory went
                    continue
                where = self._dirs.get(wd)
                if where is None or not mask & IN_ISDIR or not name:
                    continue
                self._met(*where, name, initial=False)
        return got

    def take(self) -> dict[str, str]:
        out, self.new = self.new, {}
        return out

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self._dirs.clear()


def _events(data: bytes) -> Iterator[tuple[int, int, str]]:
    at = 0
    while at + EVENT.size <= len(data):
        wd, mask, _cookie, length = EVENT.unpack_from(data, at)
        raw = data[at + EVENT.size:at + EVENT.size + length].split(b"\0", 1)[0]
        at += EVENT.size + length
        yield wd, mask, os.fsdecode(raw)


def _subdirs(directory: str) -> list[str]:
    out = []
    try:
        with os.scandir(directory) as it:
            for i, e in enumerate(it):
                if i >= LISTED_PER_DIR:
                    break
                try:
                    if e.is_dir(follow_symlinks=False):
                        out.append(e.name)
                except OSError:
                    continue
    except OSError:
        pass
    return out


def procs(directory: str, limit: int = 64) -> list[int]:
    """The first pids in a cgroup (its ``cgroup.procs``); [] if none or gone."""
    try:
        fd = os.open(os.path.join(directory, "cgroup.procs"), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return []
    try:
        raw = os.read(fd, 4096)
    except OSError:
        return []
    finally:
        os.close(fd)
    out = []
    for word in raw.split()[:limit]:
        if word.isdigit():
            out.append(int(word))
    return out
