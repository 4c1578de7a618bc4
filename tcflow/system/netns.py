"""Network namespaces: name or pid -> a path, an identity, and a cookie.

Every netns argument is normalised here, once, before it reaches netlink.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import threading
from dataclasses import dataclass
from typing import Callable, Optional, TypeVar

from tcflow.model.errors import InterfaceError
from tcflow.model.names import shown

NETNS_RUN_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000
SO_NETNS_COOKIE = 71  # Linux >= 5.14
T = TypeVar("T")


@dataclass(frozen=True)
class Netns:
    """A network namespace as tcflow refers to it.

    ``name`` is what the user typed ("" for the namespace tcflow runs in);
    ``path`` a file that pins it (``/run/netns/NAME``, ``/proc/PID/ns/net``);
    ``inode`` the kernel's namespace inode (what ``ip netns identify`` and
    ``lsns`` show). ``cookie`` is the kernel's 64-bit netns cookie, the key the
    BPF programs see; both are read when the Netns is resolved.
    """

    name: str
    path: str
    inode: int
    cookie: int

    @property
    def label(self) -> str:
        """The name as shown to people ("-" for tcflow's own namespace)."""
        return shown(self.name) if self.name else "-"


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def in_thread(enter: Callable[[], None], fn: Callable[[], T]) -> T:
    """Run ``fn`` in a new thread, after ``enter()`` has moved that thread
    into another network namespace.

    setns()/unshare() of CLONE_NEWNET affect only the calling thread, so the
    rest of the process stays where it is; sockets made by ``fn`` stay in the
    namespace it ran in. Errors are raised in the caller's thread.
    """
    box: dict[str, object] = {}

    def target() -> None:
        try:
            enter()
            box["value"] = fn()
        except BaseException as e:  # handed back to the caller's thread
            box["error"] = e

    t = threading.Thread(target=target, name="tcflow-netns")
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), what)


def run_in(path: str, fn: Callable[[], T]) -> T:
    """Run ``fn`` in a thread that has entered the netns at ``path``."""

    def enter() -> None:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            _check(_libc().setns(fd, CLONE_NEWNET), path)
        finally:
            os.close(fd)

    return in_thread(enter, fn)


def run_in_scratch(fn: Callable[[], T]) -> T:
    """Run ``fn`` in a thread inside a new, empty network namespace, which
    goes away with the thread (and whatever ``fn`` made in it)."""
    return in_thread(lambda: _check(_libc().unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)"), fn)


def cookie_of_current() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        raw = s.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8)
    return int.from_bytes(raw, "little")


def resolve(name: Optional[str] = None, pid: Optional[int] = None) -> Netns:
    """The namespace named by ``ip netns`` name, by a process id, or ours."""
    if name and pid:
        raise InterfaceError("give a namespace name or a pid, not both")
    if pid is not None:
        path = f"/proc/{int(pid)}/ns/net"
        if not os.path.exists(f"/proc/{int(pid)}"):
            raise InterfaceError("no such process", pid=pid, hint="check the pid with `ps`")
        label = f"pid:{pid}"
    elif name:
        path = name if "/" in name else os.path.join(NETNS_RUN_DIR, name)
        if not os.path.exists(path):
            raise InterfaceError(
                "no such network namespace", netns=shown(name), hint="list them with `ip netns list`"
            )
        label = name
    else:
        path = "/proc/self/ns/net"
        label = ""
    try:
        inode = os.stat(path).st_ino
        cookie = run_in(path, cookie_of_current) if label else cookie_of_current()
    except OSError as e:
        why = {errno.EACCES: " (opening a process's namespace needs CAP_SYS_PTRACE)",
               errno.EPERM: " (setns needs CAP_SYS_ADMIN)"}.get(e.errno or 0, "") if label else ""
        raise InterfaceError(f"cannot enter network namespace: {e.strerror}{why}",
                             netns=shown(label) if label else None, hint="run tcflow as root") from None
    return Netns(label, path, inode, cookie)


def cookie_of(path: str) -> Optional[int]:
    """The netns cookie of the namespace at ``path``; None if it cannot be entered."""
    try:
        return run_in(path, cookie_of_current)
    except OSError:
        return None


def find(inode: int, cookie: int, hint_path: str = "") -> Optional[str]:
    """A path that opens this namespace, or None if it is gone.

    Inode numbers of dead namespaces are handed out again, so a candidate
    with the right inode counts only if its cookie (never reused) matches too.
    Tries ``hint_path`` (where it was found before), then ``ip netns`` names,
    then every process's namespace.
    """
    candidates = [hint_path] if hint_path else []
    if os.path.isdir(NETNS_RUN_DIR):
        candidates += [os.path.join(NETNS_RUN_DIR, n) for n in sorted(os.listdir(NETNS_RUN_DIR))]
    candidates += [f"/proc/{pid}/ns/net" for pid in _pids()]
    for path in candidates:
        try:
            if os.stat(path).st_ino == inode and cookie_of(path) == cookie:
                return path
        except OSError:
            continue
    return None


def _pids() -> list[int]:
    return sorted(int(p) for p in os.listdir("/proc") if p.isdigit())


def all_namespaces() -> list[tuple[str, str, int]]:
    """(label, path, inode) of every network namespace tcflow can reach.

    Ours first (label ""), then ``ip netns`` names, then namespaces only a
    process holds (label ``pid:N``, the lowest such pid).
    """
    seen: dict[int, tuple[str, str, int]] = {}
    own = os.stat("/proc/self/ns/net").st_ino
    seen[own] = ("", "/proc/self/ns/net", own)
    if os.path.isdir(NETNS_RUN_DIR):
        for n in sorted(os.listdir(NETNS_RUN_DIR)):
            path = os.path.join(NETNS_RUN_DIR, n)
            try:
                ino = os.stat(path).st_ino
            except OSError:
                continue
            seen.setdefault(ino, (n, path, ino))
    for pid in _pids():
        path = f"/proc/{pid}/ns/net"
        try:
            ino = os.stat(path).st_ino
        except OSError:
            continue
        seen.setdefault(ino, (f"pid:{pid}", path, ino))
    return list(seen.values())
