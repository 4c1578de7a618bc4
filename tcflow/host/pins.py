"""Pinned state under bpffs: what `--pin` leaves behind, read without bcc.

A pinned tcflow keeps three maps in its pin directory (default
/sys/fs/bpf/tcflow, or ``TCFLOW_PIN_DIR``, or ``--pin-dir``):

  ifaces    {netns cookie, ifindex} -> {slot, flags}   read by the programs
  counters  per-CPU counters per slot                  written by the programs
  meta      slot -> what was attached, where and when  user space only

and with --flows the flow maps too (flows, flow_frags, flow_overflow,
flow_cache, and flow_evicted: what user space took out of the flow table).

The programs themselves are held by their attachments (the XDP link setting
and the clsact filters), not by pins: they stay as long as they are attached.
``show``, ``status`` and ``detach`` open these maps with plain bpf(2) calls,
so they need neither bcc nor kernel headers.

Every change to the pinned maps happens under an flock on the pin directory,
so two tcflow processes never hand out the same slot.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import re
import time
from dataclasses import dataclass
from typing import Iterator, Optional

from tcflow.bpf import libbpf
from tcflow.bpf.abi import FLOW_MAP_LAYOUT, MAP_LAYOUT, IfaceKey, IfaceVal, Meta
from tcflow.bpf.loader import is_ours
from tcflow.bpf.reader import Sums, read_slots
from tcflow.model.errors import PermissionError_, PinError, UsageError
from tcflow.model.names import shown
from tcflow.model.snapshot import Hooks, Snapshot, make_snapshot
from tcflow.system.safepath import chmod_dir, trusted_dir

BPFFS = "/sys/fs/bpf"
DEFAULT_PIN_DIR = os.path.join(BPFFS, "tcflow")
BPF_FS_MAGIC = 0xCAFE4A11
MAP_NAMES = ("ifaces", "counters", "meta")
SAFE_PATH = re.compile(r"^/[A-Za-z0-9._/-]+$")
LOCK_TIMEOUT_S = 30.0
INGRESS_CODES = {"xdp": 1, "tc": 2}
XDP_MODE_CODES = {None: 0, "native": 1, "generic": 2}


def default_pin_dir() -> str:
    return os.environ.get("TCFLOW_PIN_DIR", DEFAULT_PIN_DIR)


@dataclass(frozen=True)
class Entry:
    """One pinned attachment."""

    slot: int
    netns_cookie: int
    netns_inode: int
    netns: str
    netns_path: str
    ifindex: int
    ifname: str
    ingress: str
    xdp_mode: Optional[str]
    created_clsact: bool
    flags: int
    attached_at: float
    pid: int

    @property
    def hooks(self) -> Hooks:
        return Hooks(self.ingress, self.xdp_mode, pinned=True)


def meta_for(slot: int, *, cookie: int, inode: int, netns: str, netns_path: str, ifindex: int, ifname: str,
             ingress: str, xdp_mode: Optional[str], created_clsact: bool, flags: int) -> Meta:
    return Meta(netns_cookie=cookie, netns_inode=inode, attached_ns=time.time_ns(), ifindex=ifindex,
                pid=os.getpid(), in_use=1, ingress=INGRESS_CODES[ingress], xdp_mode=XDP_MODE_CODES[xdp_mode],
                created_clsact=int(created_clsact), flags=flags, ifname=os.fsencode(ifname)[:15],
                netns=os.fsencode(netns)[:111], netns_path=os.fsencode(netns_path)[:127])


def _entry(slot: int, m: Meta) -> Entry:
    ingress = {v: k for k, v in INGRESS_CODES.items()}.get(m.ingress, "?")
    mode = {v: k for k, v in XDP_MODE_CODES.items()}.get(m.xdp_mode)
    return Entry(slot, m.netns_cookie, m.netns_inode, os.fsdecode(m.netns), os.fsdecode(m.netns_path), m.ifindex,
                 os.fsdecode(m.ifname),
                 ingress, mode, bool(m.created_clsact), m.flags, m.attached_ns / 1e9, m.pid)


def is_bpffs(path: str = BPFFS) -> bool:
    """True if ``path`` is a mounted bpf filesystem."""
    libc = ctypes.CDLL(None, use_errno=True)
    buf = (ctypes.c_long * 16)()  # struct statfs; f_type is the first field
    if libc.statfs(os.fsencode(path), buf) != 0:
        return False
    return (buf[0] & 0xFFFFFFFF) == BPF_FS_MAGIC


def check_name(pin_dir: str) -> str:
    """A pin directory the user named, normalised, or a UsageError.

    Only plain path characters are taken (it is shown in hints and unit
    files); it must be a directory inside a bpffs, not a bpffs mount itself."""
    if not pin_dir:
        raise UsageError("--pin-dir is empty", hint=f"name a directory under a bpf filesystem, e.g. {DEFAULT_PIN_DIR}")
    norm = os.path.normpath(pin_dir)
    if not SAFE_PATH.match(norm) or "/../" in norm + "/":
        raise UsageError(f"--pin-dir {pin_dir!r} is not an absolute path of letters, digits and . _ - /",
                         hint=f"e.g. {DEFAULT_PIN_DIR}")
    if norm == BPFFS or is_bpffs(norm) and os.path.ismount(norm):
        raise UsageError(f"--pin-dir {norm} is a bpf filesystem itself",
                         hint=f"use a directory in it, e.g. {norm}/tcflow")
    return norm


def verify(pin_dir: str) -> bool:
    """False if ``pin_dir`` does not exist; raises a PinError if another user
    could have made or changed it, or any directory above it."""
    return trusted_dir(pin_dir, PinError)


def ensure_bpffs(pin_dir: str) -> None:
    """Make sure ``pin_dir`` can hold pins: bpffs mounted, directory made
    root-only (0700, whatever the umask), nothing another user could have
    planted on the way.

    If nothing is mounted at /sys/fs/bpf, tcflow mounts bpffs there (mode
    0700), as systemd does; any other failure is a PinError with the fix.
    """
    parent = os.path.dirname(pin_dir)
    if not is_bpffs(parent):
        if parent != BPFFS:
            raise PinError(f"{parent} is not a bpf filesystem", hint=f"mount one: mount -t bpf bpf {parent}")
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.mount(b"bpf", BPFFS.encode(), b"bpf", 0, b"mode=0700") != 0:
            err = ctypes.get_errno()
            if err == errno.EPERM:
                raise PermissionError_(f"mounting bpffs at {BPFFS} needs CAP_SYS_ADMIN",
                                       hint=f"run tcflow as root, or mount it first: mount -t bpf bpf {BPFFS}")
            raise PinError(f"bpffs is not mounted at {BPFFS} and mounting it failed: {os.strerror(err)}",
                           hint=f"mount it as root: mount -t bpf bpf {BPFFS} -o mode=0700")
    if verify(pin_dir):
        return
    try:
        os.mkdir(pin_dir, 0o700)
        chmod_dir(pin_dir, 0o700)  # the umask does not decide this
    except FileExistsError:
        pass  # another tcflow made it just now: verified below
    except OSError as e:
        if e.errno in (errno.EACCES, errno.EPERM):
            raise PermissionError_(f"cannot create {pin_dir}: {e.strerror}", hint="run tcflow with sudo") from None
        raise PinError(f"cannot create {pin_dir}: {e.strerror}",
                       hint="check that it is on a bpf filesystem and that it is writable") from None
    verify(pin_dir)


class Lock:
    """An exclusive flock on the pin directory, held while pins change.

    The directory is root-only (verified first), so no other user can open
    it, let alone hold its lock. Waiting is bounded and can be interrupted.
    Re-entrant: a rollback inside a start takes it again. With ``create``,
    the directory is made first (ensure_bpffs); a directory removed while
    this process waited for it is made again and locked anew."""

    def __init__(self, pin_dir: str, create: bool = False, timeout: float = LOCK_TIMEOUT_S):
        self.pin_dir, self.create, self.timeout = pin_dir, create, timeout
        self.fd = -1
        self.depth = 0

    def __enter__(self) -> "Lock":
        self.depth += 1
        if self.depth > 1:
            return self
        try:
            end = time.monotonic() + self.timeout
            while True:
                if self.create:
                    ensure_bpffs(self.pin_dir)
                elif not verify(self.pin_dir):
                    raise PinError(f"nothing is pinned under {self.pin_dir}",
                                   hint="attach with `tcflow attach --pin IFACE` first")
                self.fd = os.open(self.pin_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
                self._wait(end)
                held, now = os.fstat(self.fd), _stat_or_none(self.pin_dir)
                if now is not None and (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino):
                    return self
                os.close(self.fd)  # removed (and maybe made again) while we waited
                self.fd = -1
        except BaseException:
            self._release()
            raise

    def _wait(self, end: float) -> None:
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= end:
                    raise PinError(f"another process has held the lock on {self.pin_dir} for {self.timeout:g} s",
                                   hint="see `tcflow status`; try again when it is done") from None
                time.sleep(0.05)

    def _release(self) -> None:
        self.depth = 0
        if self.fd >= 0:
            os.close(self.fd)  # drops the flock too
            self.fd = -1

    def __exit__(self, *exc: object) -> None:
        self.depth -= 1
        if self.depth == 0:
            self._release()


def _stat_or_none(path: str) -> Optional[os.stat_result]:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def exists(pin_dir: str) -> bool:
    return all(os.path.exists(os.path.join(pin_dir, n)) for n in MAP_NAMES)


class Store:
    """The pinned maps, opened with bpf(2) by path. Close when done."""

    def __init__(self, pin_dir: str):
        self.pin_dir = pin_dir
        self.fds: dict[str, int] = {}
        if not verify(pin_dir):
            raise PinError(f"nothing is pinned under {pin_dir}",
                           hint="attach with `tcflow attach --pin IFACE` first")
        try:
            for n in MAP_NAMES:
                self.fds[n] = libbpf.obj_get(os.path.join(pin_dir, n))
        except Exception as e:
            self.close()
            code = getattr(e, "fields", {}).get("errno")
            if code == errno.ENOENT:
                raise PinError(f"nothing is pinned under {pin_dir}",
                               hint="attach with `tcflow attach --pin IFACE` first") from None
            if code in (errno.EACCES, errno.EPERM):
                raise PermissionError_(f"cannot open the pins under {pin_dir}", hint="run tcflow with sudo") from None
            raise
        info = libbpf.map_info(self.fds["counters"])
        self.max_interfaces = info.max_entries
        self.ncpus = libbpf.num_possible_cpus()
        if (info.name.decode(errors="replace"), info.value_size) != MAP_LAYOUT["counters"][::3] \
                or libbpf.map_info(self.fds["meta"]).value_size != ctypes.sizeof(Meta):
            self.close()
            raise PinError(f"the maps pinned under {pin_dir} have another layout (another tcflow version)",
                           hint="remove them with `tcflow detach --all`, then attach again")

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds = {}

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def entries(self) -> list[Entry]:
        """Every pinned attachment, in slot order."""
        out = []
        for key in libbpf.map_keys(self.fds["ifaces"], IfaceKey):
            val = IfaceVal()
            if not libbpf.map_lookup(self.fds["ifaces"], key, val):
                continue
            m = Meta()
            libbpf.map_lookup(self.fds["meta"], ctypes.c_uint32(val.slot), m)
            if not m.in_use or m.netns_cookie != key.netns_cookie or m.ifindex != key.ifindex:
                # an ifaces entry with no description: made by a tcflow that
                # died between the two writes; still counts, so show it.
                m = Meta(netns_cookie=key.netns_cookie, ifindex=key.ifindex, ifname=b"?", flags=val.flags)
            out.append(_entry(val.slot, m))
        return sorted(out, key=lambda e: e.slot)

    def counters(self, slots: list[int]) -> dict[int, Sums]:
        if not slots:
            return {}
        sums = read_slots(self.fds["counters"], max(slots) + 1, self.ncpus)
        return {s: sums[s] for s in slots}

    def remove(self, e: Entry) -> None:
        """Forget one attachment (its hooks must already be gone)."""
        libbpf.map_delete(self.fds["ifaces"], IfaceKey(e.netns_cookie, e.ifindex, 0))
        libbpf.map_update(self.fds["meta"], ctypes.c_uint32(e.slot), Meta())


def unpin(pin_dir: str, only_ids: Optional[set[int]] = None) -> None:
    """Remove tcflow's pinned maps, then the directory if nothing else is in
    it. A file of another kind or layout is left alone; with ``only_ids``,
    so is any map but those (a rollback removes only the maps it made)."""
    if not verify(pin_dir):
        return
    for n in MAP_NAMES + tuple(FLOW_MAP_LAYOUT):
        path = os.path.join(pin_dir, n)
        if not is_ours(path, n):
            continue
        if only_ids is not None:
            fd = libbpf.obj_get(path)
            try:
                if libbpf.map_info(fd).id not in only_ids:
                    continue
            finally:
                os.close(fd)
        os.unlink(path)
    try:
        os.rmdir(pin_dir)
    except OSError:
        pass


def iter_pin_files(pin_dir: str) -> Iterator[str]:
    if os.path.isdir(pin_dir):
        for n in sorted(os.listdir(pin_dir)):
            yield os.path.join(pin_dir, n)


def read_snapshot(pin_dir: str) -> Snapshot:
    """The pinned counters of every pinned attachment, read with bpf(2) alone."""
    with Store(pin_dir) as store:
        entries = store.entries()
        sums = store.counters([e.slot for e in entries])
    return make_snapshot((shown(e.ifname), shown(e.netns), e.ifindex, e.hooks, *sums[e.slot]) for e in entries)
