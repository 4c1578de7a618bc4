"""Load tcflow's programs and make their maps, with bpf(2) alone.

The instructions come from tcflow/build.py (cached, or compiled by bcc in a
child process); this module creates the maps, writes their fds and the
namespace into the instructions, and loads them. hooks.py takes the program
fds from here. Whoever makes a Datapath owns it and closes it: one per
agent, however many namespaces it serves.

Each program is loaded once per network namespace it serves (see the C for
why no helper can tell the namespace), with that namespace's own
``by_ifindex`` array and its cookie written into one 64-bit immediate.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
import threading
import time
from dataclasses import dataclass
from typing import Any, Optional

from . import _libbpf, build, kheaders, pins
from .build import PROG_TC_EGRESS, PROG_TC_INGRESS, PROG_XDP, PROGRAMS  # noqa: F401 (re-exported)
from .errors import CompileError, PermissionError_, PinError, TcflowError
from .pins import BPF_MAP_TYPE_ARRAY, IfaceKey, IfaceVal

DEFAULT_MAX_IFACES = 4096
# Entries of each namespace's by_ifindex array (8 bytes each, 64 KiB): an
# interface whose ifindex is past it is found through the shared hash instead,
# which costs more a packet (bench: in situ).
IFINDEX_SLOTS = 8192
IFACE_F_BOUND = 0x80000000
PLACEHOLDER = 0x7CF1C00C1E5EED01

_BPF_LD_IMM64 = 0x18


@dataclass(frozen=True)
class Options:
    """Map size and, with ``pin_dir``, pinned maps. Neither changes the
    instructions: one cached image serves every size and pin directory."""

    max_ifaces: int = DEFAULT_MAX_IFACES
    pin_dir: Optional[str] = None


def patch_imm64(insns: bytes, old: int, new: int) -> bytes:
    """Replace the one ld_imm64 of ``old`` with ``new``; error if not exactly one."""
    buf = bytearray(insns)
    hits = []
    for off in range(0, len(buf) - 15, 8):
        if buf[off] != _BPF_LD_IMM64:
            continue
        lo = struct.unpack_from("<I", buf, off + 4)[0]
        hi = struct.unpack_from("<I", buf, off + 12)[0]
        if (hi << 32 | lo) == old:
            hits.append(off)
    if len(hits) != 1:
        raise CompileError(f"expected one netns placeholder in the program, found {len(hits)}")
    struct.pack_into("<I", buf, hits[0] + 4, new & 0xFFFFFFFF)
    struct.pack_into("<I", buf, hits[0] + 12, new >> 32)
    return bytes(buf)


class Datapath:
    """The program image, its loaded programs and its maps.

    ``ifaces``: {netns cookie, ifindex} -> {slot, flags}, the whole truth;
    ``by_ifindex`` (one per namespace): ifindex -> {slot, flags | BOUND}, the
    same entries again for the programs' fast lookup; ``counters``: per-CPU
    array of one {bytes, packets} cell per class per slot; ``meta`` (pinned
    only): what each slot is, for `tcflow show/status/detach`.
    ``origin`` says where the image came from: "cache" or "compiled".
    """

    def __init__(self, options: Options = Options(), use_cache: bool = True):
        self.options = options
        self.image, self.origin = build.image(kheaders.locate(), use_cache=use_cache)
        self.ncpus = _libbpf.num_possible_cpus()
        self._lock = threading.Lock()
        self._fds: dict[str, int] = {}
        self._arrays: dict[int, int] = {}        # netns cookie -> its by_ifindex fd
        self._progs: dict[tuple[str, int], int] = {}
        self._load_s: dict[tuple[str, int], float] = {}  # how long each load (the verifier) took
        self._retired: dict[str, tuple[int, int]] = {}  # stats of programs released, so totals never drop
        try:
            for name in ("ifaces", "counters") + (("meta",) if options.pin_dir else ()):
                self._fds[name] = self._open_map(name)
        except BaseException:
            self.close()
            raise

    # -- maps ------------------------------------------------------------
    def _open_map(self, name: str) -> int:
        kname, mtype, ksize, vsize = pins.MAP_LAYOUT[name]
        size = self.options.max_ifaces
        pin_dir = self.options.pin_dir
        if not pin_dir:
            return _create(mtype, kname, ksize, vsize, size)
        path = os.path.join(pin_dir, name)
        if os.path.lexists(path):
            if not pins.is_ours(path, name):
                raise PinError(f"{path} is not a map of this tcflow version's layout",
                               hint="remove the pins with `tcflow detach --all`, then attach again")
            fd = _libbpf.obj_get(path)
            held = _libbpf.map_info(fd).max_entries
            if held != size:
                os.close(fd)
                raise PinError(f"the maps pinned under {pin_dir} hold {held} interfaces, not {size}",
                               hint=f"use --max-interfaces {held}, or `tcflow detach --all` first")
            return fd
        fd = _create(mtype, kname, ksize, vsize, size)
        try:
            _libbpf.obj_pin(fd, path)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _array(self, cookie: int) -> int:
        """The by_ifindex array of one namespace, made on first use (lock held)."""
        fd = self._arrays.get(cookie)
        if fd is None:
            fd = self._arrays[cookie] = _create(BPF_MAP_TYPE_ARRAY, "by_ifindex", 4, ctypes.sizeof(IfaceVal),
                                                IFINDEX_SLOTS)
        return fd

    def map_fd(self, name: str) -> int:
        return self._fds[name]

    def index(self, cookie: int, ifindex: int, slot: int, flags: int) -> None:
        """Point this namespace's programs at ``slot`` for ``ifindex`` (the
        fast lookup); interfaces past the array are found through ``ifaces``."""
        if 0 <= ifindex < IFINDEX_SLOTS:
            with self._lock:
                fd = self._array(cookie)
            _libbpf.map_update(fd, ctypes.c_uint32(ifindex), IfaceVal(slot, flags | IFACE_F_BOUND))

    def unindex(self, cookie: int, ifindex: int) -> None:
        with self._lock:
            fd = self._arrays.get(cookie)
        if fd is not None and 0 <= ifindex < IFINDEX_SLOTS:
            _libbpf.map_update(fd, ctypes.c_uint32(ifindex), IfaceVal(0, 0))

    def iface_entries(self) -> dict[tuple[int, int], tuple[int, int]]:
        """Every entry of ``ifaces``: {(cookie, ifindex): (slot, flags)}."""
        fd = self._fds["ifaces"]
        out = {}
        for k in _libbpf.map_keys(fd, IfaceKey):
            v = IfaceVal()
            if _libbpf.map_lookup(fd, k, v):
                out[(int(k.netns_cookie), int(k.ifindex))] = (int(v.slot), int(v.flags))
        return out

    def map_ids(self) -> set[int]:
        """The kernel's ids of this Datapath's shared maps (to tell its pins from others')."""
        return {_libbpf.map_info(fd).id for fd in self._fds.values()}

    # -- programs ----------------------------------------------------------
    def prog(self, name: str, netns_cookie: int) -> int:
        """The fd of program ``name`` for one network namespace, loaded on first use."""
        with self._lock:
            fd = self._progs.get((name, netns_cookie))
            if fd is None:
                t0 = time.perf_counter()
                fd = self._load(name, netns_cookie)
                self._load_s[(name, netns_cookie)] = time.perf_counter() - t0
                self._progs[(name, netns_cookie)] = fd
            return fd

    def _insns(self, name: str, cookie: int) -> bytes:
        fds = {"ifaces": self._fds["ifaces"], "counters": self._fds["counters"], "by_ifindex": self._array(cookie)}
        return patch_imm64(self.image.link(name, fds), PLACEHOLDER, cookie)

    def _load(self, name: str, cookie: int) -> int:
        try:
            return _libbpf.prog_load(build.PROG_TYPES[name], name, self._insns(name, cookie))
        except TcflowError as e:
            err = e.fields.get("errno")
            if err == errno.EPERM:
                raise PermissionError_("loading BPF programs needs root", hint="run tcflow with sudo") from None
            if self.origin != "cache" or err not in (errno.EINVAL, errno.EACCES, errno.E2BIG):
                raise CompileError(e.message, hint="run `tcflow doctor`") from None
        # The verifier refused a cached image: never trusted again. Compile
        # afresh; programs already loaded from the old image stay valid.
        build.discard(self.image.key)
        self.image, self.origin = build.image(kheaders.locate(), use_cache=False)
        try:
            return _libbpf.prog_load(build.PROG_TYPES[name], name, self._insns(name, cookie))
        except TcflowError as e:
            raise CompileError(e.message, hint="run `tcflow doctor`") from None

    def load_facts(self, name: str, netns_cookie: int) -> dict[str, Any]:
        """Size and verification of one loaded program: JITed bytes, instructions, the load's time."""
        fd = self.prog(name, netns_cookie)
        info = _libbpf.prog_info(fd)
        return {"jited_bytes": info.jited_prog_len, "xlated_insns": info.xlated_prog_len // 8,
                "verified_insns": info.verified_insns, "load_ms": self._load_s[(name, netns_cookie)] * 1000}

    def program_stats(self) -> dict[str, tuple[int, int]]:
        """{program: (runs, run time in ns)} summed over the namespaces it was
        loaded for. The kernel counts only while BPF statistics are enabled."""
        with self._lock:
            out = dict(self._retired)
            for (name, _cookie), fd in self._progs.items():
                _add_stats(out, name, fd)
        return out

    def release(self, netns_cookie: int) -> None:
        """Close the programs (and the array) of one namespace tcflow no longer serves."""
        with self._lock:
            for key in [k for k in self._progs if k[1] == netns_cookie]:
                fd = self._progs.pop(key)
                _add_stats(self._retired, key[0], fd)
                os.close(fd)
            array = self._arrays.pop(netns_cookie, None)
            if array is not None:
                os.close(array)

    @property
    def programs_loaded(self) -> int:
        return len(self._progs)

    def __enter__(self) -> "Datapath":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Close every fd (maps go unless pinned; attached programs stay
        alive with the maps they use)."""
        with self._lock:
            for fd in [*self._progs.values(), *self._arrays.values(), *self._fds.values()]:
                os.close(fd)
            self._progs.clear()
            self._arrays.clear()
            self._fds.clear()


def _create(mtype: int, name: str, ksize: int, vsize: int, size: int) -> int:
    try:
        return _libbpf.map_create(mtype, name, ksize, vsize, size)
    except TcflowError as e:
        if e.fields.get("errno") == errno.EPERM:
            raise PermissionError_("creating BPF maps needs root", hint="run tcflow with sudo") from None
        raise


def _add_stats(into: dict[str, tuple[int, int]], name: str, fd: int) -> None:
    info = _libbpf.prog_info(fd)
    short = name[len("tcflow_"):]
    cnt, ns = into.get(short, (0, 0))
    into[short] = (cnt + info.run_cnt, ns + info.run_time_ns)
