"""Load tcflow's programs and make their maps, with bpf(2) alone.

The instructions come from tcflow/bpf/build.py (cached, or compiled by bcc in a
child process); this module creates the maps, writes their fds and the
namespace into the instructions, and loads them. host/hooks.py takes the program
fds from here. Whoever makes a Datapath owns it and closes it: one per
agent, however many namespaces it serves.

Each program is loaded once per network namespace it serves (see the C for
why no helper can tell the namespace), with that namespace's own
``by_ifindex`` array, whose entry 0 holds the namespace's cookie. The
instructions name no namespace, so ``load_spare_sets()`` can load a spare set ahead of
time: a namespace that appears (a container) then takes a set already
verified, and is counted a few netlink calls later, not after the verifier.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Optional

from tcflow.bpf import build, kheaders, libbpf
from tcflow.bpf.abi import (
    BPF_F_NO_PREALLOC,
    BPF_MAP_TYPE_ARRAY,
    FLOW_CACHE_WAYS,
    FLOW_MAP_LAYOUT,
    IFACE_F_BOUND,
    MAP_LAYOUT,
    IfaceKey,
    IfaceVal,
    flow_cache_set_bits,
)
from tcflow.bpf.build import PROG_TC_EGRESS, PROG_TC_INGRESS, PROG_XDP, PROGRAMS  # noqa: F401 (re-exported)
from tcflow.model.errors import CompileError, PermissionError_, PinError, TcflowError

PINNED_LAYOUT = {**MAP_LAYOUT, **FLOW_MAP_LAYOUT}
DEFAULT_MAX_IFACES = 4096
# Entries of each namespace's by_ifindex array (8 bytes each, 64 KiB): an
# interface whose ifindex is past it is found through the shared hash instead,
# which costs more a packet (bench: in situ).
IFINDEX_SLOTS = 8192


DEFAULT_FLOW_ENTRIES = 16384
FRAG_ENTRIES = 1024  # first fragments whose ports later fragments look up (LRU)


@dataclass(frozen=True)
class Options:
    """Map size and, with ``pin_dir``, pinned maps; neither changes the
    instructions. ``flows`` (`--flows`) takes the image that also counts
    per five-tuple, with a flow table of ``flow_entries``."""

    max_interfaces: int = DEFAULT_MAX_IFACES
    pin_dir: Optional[str] = None
    flows: bool = False
    flow_entries: int = DEFAULT_FLOW_ENTRIES


@dataclass
class _Set:
    """One namespace's by_ifindex array and the programs loaded with it."""

    array: int
    progs: dict[str, int] = field(default_factory=dict)
    load_s: dict[str, float] = field(default_factory=dict)  # how long each load (the verifier) took


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
        self.image, self.origin = build.image(kheaders.locate(), use_cache=use_cache, flows=options.flows)
        self.ncpus = libbpf.num_possible_cpus()
        self.flow_cache_sets = 1 << flow_cache_set_bits(self.ncpus)  # as build.cflags() compiled it
        self._lock = threading.Lock()
        self._fds: dict[str, int] = {}
        self._sets: dict[int, _Set] = {}   # netns cookie -> its array and programs
        self._spare: list[_Set] = []       # loaded ahead, for namespaces yet to come
        self._retired: dict[str, tuple[int, int]] = {}  # stats of programs released, so totals never drop
        try:
            self._check_flow_pins()
            for name in ("ifaces", "counters") + (("meta",) if options.pin_dir else ()):
                self._fds[name] = self._open_map(name)
            if options.flows:
                # The flow table is not preallocated: memory follows the flows
                # there are (per CPU each), up to flow_entries; past it, new
                # flows go to overflow. With --pin all of them are pinned, and
                # flow_evicted keeps what user space took out of the table.
                sizes = {"flows": (options.flow_entries, BPF_F_NO_PREALLOC), "flow_frags": (FRAG_ENTRIES, 0),
                         "flow_overflow": (options.max_interfaces, 0),
                         "flow_cache": (self.flow_cache_sets * self.ncpus, 0)}  # each CPU its sets
                if options.pin_dir:
                    sizes["flow_evicted"] = (options.max_interfaces, 0)
                    # at most a key per cache line, written by user space alone
                    sizes["flow_handed"] = (self.flow_cache_sets * FLOW_CACHE_WAYS * self.ncpus, BPF_F_NO_PREALLOC)
                for name, (size, flags) in sizes.items():
                    self._fds[name] = self._open_map(name, size, flags)
        except BaseException:
            self.close()
            raise

    # -- maps ------------------------------------------------------------
    def _check_flow_pins(self) -> None:
        """Pins made with --flows are adopted with --flows only, and the other
        way round: their programs count flows (or do not)."""
        pin_dir = self.options.pin_dir
        if not pin_dir or not os.path.lexists(os.path.join(pin_dir, "counters")):
            return
        flows_pinned = os.path.lexists(os.path.join(pin_dir, "flows"))
        if flows_pinned and not self.options.flows:
            raise PinError(f"the pins under {pin_dir} were made with --flows (their programs count flows)",
                           hint="add --flows, or `tcflow detach --all` first")
        if self.options.flows and not flows_pinned:
            raise PinError(f"the pins under {pin_dir} were made without --flows (their programs count no flows)",
                           hint="drop --flows, or `tcflow detach --all` first")

    def _open_map(self, name: str, size: Optional[int] = None, flags: int = 0) -> int:
        kname, mtype, ksize, vsize = PINNED_LAYOUT[name]
        size = self.options.max_interfaces if size is None else size
        pin_dir = self.options.pin_dir
        if not pin_dir:
            return _create(mtype, kname, ksize, vsize, size, flags)
        path = os.path.join(pin_dir, name)
        if os.path.lexists(path):
            if not is_ours(path, name):
                raise PinError(f"{path} is not a map of this tcflow version's layout",
                               hint="remove the pins with `tcflow detach --all`, then attach again")
            fd = libbpf.obj_get(path)
            held = libbpf.map_info(fd).max_entries
            if held != size:
                os.close(fd)
                what, option = ("flows", "--flow-entries") if name == "flows" else ("interfaces", "--max-interfaces")
                raise PinError(f"the maps pinned under {pin_dir} hold {held} {what}, not {size}",
                               hint=f"use {option} {held}, or `tcflow detach --all` first")
            return fd
        fd = _create(mtype, kname, ksize, vsize, size, flags)
        try:
            libbpf.obj_pin(fd, path)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _set(self, cookie: int) -> _Set:
        """The set of one namespace: a spare one if there is, else a new
        array (programs load on first use). Lock held."""
        s = self._sets.get(cookie)
        if s is None:
            s = self._spare.pop() if self._spare else _Set(_create(BPF_MAP_TYPE_ARRAY, "by_ifindex", 4,
                                                                   ctypes.sizeof(IfaceVal), IFINDEX_SLOTS))
            # entry 0: the cookie, for the fallback to the shared hash
            libbpf.map_update(s.array, ctypes.c_uint32(0), IfaceVal(cookie & 0xFFFFFFFF, cookie >> 32))
            self._sets[cookie] = s
        return s

    def map_fd(self, name: str) -> int:
        return self._fds[name]

    def map_names(self) -> set[str]:
        return set(self._fds)

    def index(self, cookie: int, ifindex: int, slot: int, flags: int) -> None:
        """Point this namespace's programs at ``slot`` for ``ifindex`` (the
        fast lookup); interfaces past the array are found through ``ifaces``."""
        if 0 < ifindex < IFINDEX_SLOTS:
            with self._lock:
                fd = self._set(cookie).array
            libbpf.map_update(fd, ctypes.c_uint32(ifindex), IfaceVal(slot, flags | IFACE_F_BOUND))

    def unindex(self, cookie: int, ifindex: int) -> None:
        with self._lock:
            s = self._sets.get(cookie)
        if s is not None and 0 < ifindex < IFINDEX_SLOTS:
            libbpf.map_update(s.array, ctypes.c_uint32(ifindex), IfaceVal(0, 0))

    def interface_entries(self) -> dict[tuple[int, int], tuple[int, int]]:
        """Every entry of ``ifaces``: {(cookie, ifindex): (slot, flags)}."""
        fd = self._fds["ifaces"]
        out = {}
        for k in libbpf.map_keys(fd, IfaceKey):
            v = IfaceVal()
            if libbpf.map_lookup(fd, k, v):
                out[(int(k.netns_cookie), int(k.ifindex))] = (int(v.slot), int(v.flags))
        return out

    def map_ids(self) -> set[int]:
        """The kernel's ids of this Datapath's shared maps (to tell its pins from others')."""
        return {libbpf.map_info(fd).id for fd in self._fds.values()}

    # -- programs ----------------------------------------------------------
    def prog(self, name: str, netns_cookie: int) -> int:
        """The fd of program ``name`` for one network namespace, loaded on first use."""
        with self._lock:
            s = self._set(netns_cookie)
            fd = s.progs.get(name)
            return fd if fd is not None else self._load_into(s, name)

    def load_spare_sets(self, names: tuple[str, ...] = (PROG_TC_INGRESS, PROG_TC_EGRESS), count: int = 1) -> int:
        """Keep ``count`` spare sets with ``names`` loaded, for namespaces that
        will appear (--containers); how many were made now. The verifier runs
        without the lock held: programs for other namespaces load meanwhile."""
        made = 0
        while True:
            with self._lock:
                if len(self._spare) >= count or not self._fds:
                    return made
            s = _Set(_create(BPF_MAP_TYPE_ARRAY, "by_ifindex", 4, ctypes.sizeof(IfaceVal), IFINDEX_SLOTS))
            try:
                for name in names:
                    self._load_into(s, name)
            except BaseException:
                _close_set(s, None)
                raise
            with self._lock:
                self._spare.append(s)
            made += 1

    def spare_sets(self) -> int:
        with self._lock:
            return len(self._spare)

    def _load_into(self, s: _Set, name: str) -> int:
        t0 = time.perf_counter()
        fd = s.progs[name] = self._load(name, s)
        s.load_s[name] = time.perf_counter() - t0
        return fd

    def _insns(self, name: str, s: _Set) -> bytes:
        maps = {"ifaces": self._fds["ifaces"], "counters": self._fds["counters"], "by_ifindex": s.array}
        maps.update({m: self._fds[m] for m in build.FLOW_MAPS if m in self._fds})
        return self.image.link(name, maps)

    def _load(self, name: str, s: _Set) -> int:
        try:
            return libbpf.prog_load(build.PROG_TYPES[name], name, self._insns(name, s))
        except TcflowError as e:
            err = e.fields.get("errno")
            if err == errno.EPERM:
                raise PermissionError_("loading BPF programs needs root", hint="run tcflow with sudo") from None
            if self.origin != "cache" or err not in (errno.EINVAL, errno.EACCES, errno.E2BIG):
                raise CompileError(e.message, hint="run `tcflow doctor`") from None
        # The verifier refused a cached image: never trusted again. Compile
        # afresh; programs already loaded from the old image stay valid.
        build.discard(self.image.key)
        self.image, self.origin = build.image(kheaders.locate(), use_cache=False, flows=self.options.flows)
        try:
            return libbpf.prog_load(build.PROG_TYPES[name], name, self._insns(name, s))
        except TcflowError as e:
            raise CompileError(e.message, hint="run `tcflow doctor`") from None

    def load_facts(self, name: str, netns_cookie: int) -> dict[str, Any]:
        """Size and verification of one loaded program: JITed bytes, instructions, the load's time."""
        fd = self.prog(name, netns_cookie)
        info = libbpf.prog_info(fd)
        return {"jited_bytes": info.jited_prog_len, "xlated_insns": info.xlated_prog_len // 8,
                "verified_insns": info.verified_insns,
                "load_ms": self._sets[netns_cookie].load_s[name] * 1000}

    def program_stats(self) -> dict[str, tuple[int, int]]:
        """{program: (runs, run time in ns)} summed over the namespaces it was
        loaded for. The kernel counts only while BPF statistics are enabled."""
        with self._lock:
            out = dict(self._retired)
            for s in self._sets.values():
                for name, fd in s.progs.items():
                    _add_stats(out, name, fd)
        return out

    def release(self, netns_cookie: int) -> None:
        """Close the programs (and the array) of one namespace tcflow no longer serves."""
        with self._lock:
            s = self._sets.pop(netns_cookie, None)
            if s is not None:
                _close_set(s, self._retired)

    @property
    def programs_loaded(self) -> int:
        """Programs serving namespaces (spare sets not counted)."""
        return sum(len(s.progs) for s in self._sets.values())

    def __enter__(self) -> "Datapath":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Close every fd (maps go unless pinned; attached programs stay
        alive with the maps they use)."""
        with self._lock:
            for s in [*self._sets.values(), *self._spare]:
                _close_set(s, None)
            for fd in self._fds.values():
                os.close(fd)
            self._sets.clear()
            self._spare.clear()
            self._fds.clear()


def is_ours(path: str, name: str) -> bool:
    """True if ``path`` is a pinned map that tcflow makes: a regular bpffs
    file (not a link) holding a map of that name, type and layout."""
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return False
        fd = libbpf.obj_get(path)
    except (OSError, TcflowError):
        return False
    try:
        info = libbpf.map_info(fd)
    except TcflowError:
        return False
    finally:
        os.close(fd)
    return (info.name.decode(errors="replace"), info.type, info.key_size, info.value_size) == PINNED_LAYOUT[name]


def _create(mtype: int, name: str, ksize: int, vsize: int, size: int, flags: int = 0) -> int:
    try:
        return libbpf.map_create(mtype, name, ksize, vsize, size, flags)
    except TcflowError as e:
        if e.fields.get("errno") == errno.EPERM:
            raise PermissionError_("creating BPF maps needs root", hint="run tcflow with sudo") from None
        raise


def _close_set(s: _Set, retired: Optional[dict[str, tuple[int, int]]]) -> None:
    for name, fd in s.progs.items():
        if retired is not None:
            _add_stats(retired, name, fd)
        os.close(fd)
    os.close(s.array)


def _add_stats(into: dict[str, tuple[int, int]], name: str, fd: int) -> None:
    info = libbpf.prog_info(fd)
    short = name[len("tcflow_"):]
    cnt, ns = into.get(short, (0, 0))
    into[short] = (cnt + info.run_cnt, ns + info.run_time_ns)
