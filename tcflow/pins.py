"""Pinned state under bpffs: what `--pin` leaves behind, read without bcc.

A pinned tcflow keeps three maps in its pin directory (default
/sys/fs/bpf/tcflow, or ``TCFLOW_PIN_DIR``, or ``--pin-dir``):

  ifaces    {netns cookie, ifindex} -> {slot, flags}   read by the programs
  counters  per-CPU counters per slot                  written by the programs
  meta      slot -> what was attached, where and when  user space only

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
import time
from dataclasses import dataclass
from typing import Iterator, Optional

from . import _libbpf
from .classes import NUM_CLASSES
from .errors import PermissionError_, PinError
from .reader import Sums, read_slots
from .snapshot import Hooks, Snapshot, make_snapshot

BPFFS = "/sys/fs/bpf"
DEFAULT_PIN_DIR = os.path.join(BPFFS, "tcflow")
BPF_FS_MAGIC = 0xCAFE4A11
MAP_NAMES = ("ifaces", "counters", "meta")
INGRESS_CODES = {"xdp": 1, "tc": 2}
XDP_MODE_CODES = {None: 0, "native": 1, "generic": 2}


def default_pin_dir() -> str:
    return os.environ.get("TCFLOW_PIN_DIR") or DEFAULT_PIN_DIR


class IfaceKey(ctypes.Structure):
    _fields_ = [("netns_cookie", ctypes.c_uint64), ("ifindex", ctypes.c_uint32), ("pad", ctypes.c_uint32)]


class IfaceVal(ctypes.Structure):
    _fields_ = [("slot", ctypes.c_uint32), ("flags", ctypes.c_uint32)]


class Meta(ctypes.Structure):
    """struct iface_meta in xdp_tc.c, byte for byte."""

    _fields_ = [("netns_cookie", ctypes.c_uint64), ("netns_inode", ctypes.c_uint64),
                ("attached_ns", ctypes.c_uint64), ("ifindex", ctypes.c_uint32), ("pid", ctypes.c_uint32),
                ("in_use", ctypes.c_uint8), ("ingress", ctypes.c_uint8), ("xdp_mode", ctypes.c_uint8),
                ("created_clsact", ctypes.c_uint8), ("flags", ctypes.c_uint32),
                ("ifname", ctypes.c_char * 16), ("netns", ctypes.c_char * 112),
                ("netns_path", ctypes.c_char * 128)]


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
                created_clsact=int(created_clsact), flags=flags, ifname=ifname.encode()[:15],
                netns=netns.encode()[:111], netns_path=netns_path.encode()[:127])


def _entry(slot: int, m: Meta) -> Entry:
    ingress = {v: k for k, v in INGRESS_CODES.items()}.get(m.ingress, "?")
    mode = {v: k for k, v in XDP_MODE_CODES.items()}.get(m.xdp_mode)
    return Entry(slot, m.netns_cookie, m.netns_inode, m.netns.decode(errors="replace"),
                 m.netns_path.decode(errors="replace"), m.ifindex, m.ifname.decode(errors="replace"),
                 ingress, mode, bool(m.created_clsact), m.flags, m.attached_ns / 1e9, m.pid)


def is_bpffs(path: str = BPFFS) -> bool:
    """True if ``path`` is a mounted bpf filesystem."""
    libc = ctypes.CDLL(None, use_errno=True)
    buf = (ctypes.c_long * 16)()  # struct statfs; f_type is the first field
    if libc.statfs(path.encode(), buf) != 0:
        return False
    return (buf[0] & 0xFFFFFFFF) == BPF_FS_MAGIC


def ensure_bpffs(pin_dir: str) -> None:
    """Make sure ``pin_dir`` can hold pins: bpffs mounted, directory made.

    If nothing is mounted at /sys/fs/bpf, tcflow mounts bpffs there, as
    systemd and iproute2 do; any other failure is a PinError with the fix.
    """
    parent = os.path.dirname(pin_dir.rstrip("/")) or "/"
    if not is_bpffs(parent):
        if parent != BPFFS:
            raise PinError(f"{parent} is not a bpf filesystem", hint=f"mount one: mount -t bpf bpf {parent}")
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.mount(b"bpf", BPFFS.encode(), b"bpf", 0, None) != 0:
            err = ctypes.get_errno()
            raise PinError(f"bpffs is not mounted at {BPFFS} and mounting it failed: {os.strerror(err)}",
                           hint=f"mount it as root: mount -t bpf bpf {BPFFS}")
    try:
        os.makedirs(pin_dir, exist_ok=True)
    except OSError as e:
        if e.errno in (errno.EACCES, errno.EPERM):
            raise PermissionError_(f"cannot create {pin_dir}: {e.strerror}", hint="run tcflow with sudo") from None
        raise PinError(f"cannot create {pin_dir}: {e.strerror}",
                       hint="check that it is on a bpf filesystem and that it is writable") from None


class Lock:
    """An exclusive flock on the pin directory, held while pins change."""

    def __init__(self, pin_dir: str):
        self.pin_dir = pin_dir
        self.fd = -1

    def __enter__(self) -> "Lock":
        self.fd = os.open(self.pin_dir, os.O_RDONLY | os.O_DIRECTORY)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


def exists(pin_dir: str) -> bool:
    return all(os.path.exists(os.path.join(pin_dir, n)) for n in MAP_NAMES)


class Store:
    """The pinned maps, opened with bpf(2) by path. Close when done."""

    def __init__(self, pin_dir: str):
        self.pin_dir = pin_dir
        self.fds: dict[str, int] = {}
        try:
            for n in MAP_NAMES:
                self.fds[n] = _libbpf.obj_get(os.path.join(pin_dir, n))
        except Exception as e:
            self.close()
            code = getattr(e, "fields", {}).get("errno")
            if code == errno.ENOENT:
                raise PinError(f"nothing is pinned under {pin_dir}",
                               hint="attach with `tcflow attach --pin IFACE` first") from None
            if code in (errno.EACCES, errno.EPERM):
                raise PermissionError_(f"cannot open the pins under {pin_dir}", hint="run tcflow with sudo") from None
            raise
        info = _libbpf.map_info(self.fds["counters"])
        self.max_ifaces = info.max_entries
        self.ncpus = _libbpf.num_possible_cpus()
        expect = 16 * NUM_CLASSES
        if info.value_size != expect or _libbpf.map_info(self.fds["meta"]).value_size != ctypes.sizeof(Meta):
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
        for key in _libbpf.map_keys(self.fds["ifaces"], IfaceKey):
            val = IfaceVal()
            if not _libbpf.map_lookup(self.fds["ifaces"], key, val):
                continue
            m = Meta()
            _libbpf.map_lookup(self.fds["meta"], ctypes.c_uint32(val.slot), m)
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
        _libbpf.map_delete(self.fds["ifaces"], IfaceKey(e.netns_cookie, e.ifindex, 0))
        _libbpf.map_update(self.fds["meta"], ctypes.c_uint32(e.slot), Meta())


def unpin(pin_dir: str) -> None:
    """Remove the pinned maps and the directory, if nothing else is in it."""
    for n in MAP_NAMES:
        try:
            os.unlink(os.path.join(pin_dir, n))
        except FileNotFoundError:
            pass
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
    return make_snapshot((e.ifname, e.netns, e.ifindex, e.hooks, *sums[e.slot]) for e in entries)
