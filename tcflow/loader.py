"""Compile tcflow/bpf/xdp_tc.c with bcc and load its programs.

compile -> load is this module; hooks.py takes the program fds from here.
Whoever makes a Datapath owns it and closes it: one per agent, however many
namespaces it serves.
Each program is loaded once per network namespace it serves, from the same
compiled code, with that namespace's cookie written into one 64-bit immediate
(see TCFLOW_NETNS_PLACEHOLDER in the C for why no helper can tell it).
"""

from __future__ import annotations

import ctypes
import os
import struct
import tempfile
import threading
from dataclasses import dataclass
from typing import Any, Optional

from . import _libbpf, classes, kheaders
from .errors import CompileError, DependencyError, PermissionError_, PinError

SOURCE = os.path.join(os.path.dirname(__file__), "bpf", "xdp_tc.c")
DEFAULT_MAX_IFACES = 4096
PLACEHOLDER = 0x7CF1C00C1E5EED01
PROG_XDP = "tcflow_xdp"
PROG_TC_INGRESS = "tcflow_tc_ingress"
PROG_TC_EGRESS = "tcflow_tc_egress"
PROGRAMS = (PROG_XDP, PROG_TC_INGRESS, PROG_TC_EGRESS)

_BPF_LD_IMM64 = 0x18


@dataclass(frozen=True)
class Options:
    """What is compiled in: map size and, with ``pin_dir``, pinned maps."""

    max_ifaces: int = DEFAULT_MAX_IFACES
    pin_dir: Optional[str] = None

    def cflags(self) -> list[str]:
        flags = classes.cflags() + [f"-DTCFLOW_MAX_IFACES={self.max_ifaces}"]
        if self.pin_dir:
            flags.append(f'-DTCFLOW_PIN_DIR="{self.pin_dir}"')
        return flags


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
        raise CompileError(f"expected one netns placeholder in the XDP program, found {len(hits)}")
    struct.pack_into("<I", buf, hits[0] + 4, new & 0xFFFFFFFF)
    struct.pack_into("<I", buf, hits[0] + 12, new >> 32)
    return bytes(buf)


class _CaptureStderr:
    """bcc/clang print diagnostics on fd 2; keep them for the error message.

    fd 2 is the whole process's: used only around the compile, which runs
    before any other thread of tcflow's (the HTTP server) starts."""

    def __enter__(self) -> "_CaptureStderr":
        self.file = tempfile.TemporaryFile()
        self.saved = os.dup(2)
        os.dup2(self.file.fileno(), 2)
        return self

    def __exit__(self, *exc: Any) -> None:
        os.dup2(self.saved, 2)
        os.close(self.saved)
        self.file.seek(0)
        self.text = self.file.read().decode(errors="replace")
        self.file.close()


class Datapath:
    """The compiled module, its loaded programs and its two maps.

    ``ifaces``: {netns cookie, ifindex} -> {slot, flags};
    ``counters``: per-CPU array of 26 byte and 26 packet counters per slot.
    """

    def __init__(self, options: Options = Options()):
        self.options = options
        self.headers = kheaders.locate()
        try:
            from bcc import BPF  # bcc pulls in LLVM: imported only when a compile is wanted
        except ImportError:
            raise DependencyError(
                "cannot import bcc", hint="apt-get install python3-bpfcc, and run tcflow from a "
                "Python that sees Debian's dist-packages (make setup builds one)"
            ) from None
        try:
            with _CaptureStderr() as cap, kheaders.applied(self.headers):
                self.bpf = BPF(src_file=SOURCE.encode(), cflags=options.cflags())
        except Exception as e:
            lines = [ln for ln in cap.text.splitlines() if ln.strip()]
            detail = lines[-1] if lines else str(e)
            if os.geteuid() != 0:
                raise PermissionError_("loading BPF programs needs root",
                                       hint="run tcflow with sudo") from None
            raise CompileError(f"bcc could not compile {os.path.basename(SOURCE)}: {detail}",
                               hint="run `tcflow doctor`") from None
        self._types = {PROG_XDP: BPF.XDP, PROG_TC_INGRESS: BPF.SCHED_CLS, PROG_TC_EGRESS: BPF.SCHED_CLS}
        self._progs: dict[tuple[str, int], int] = {}
        self._retired: dict[str, tuple[int, int]] = {}  # stats of programs released, so totals never drop
        self._lock = threading.Lock()
        self.ifaces = self.bpf[b"ifaces"]
        self.counters = self.bpf[b"counters"]
        self.ncpus = int(self.counters.total_cpu)
        if options.pin_dir:
            self._check_pinned(options)

    def _check_pinned(self, options: Options) -> None:
        """bcc reuses maps already pinned at the path, whatever their size."""
        held = _libbpf.map_info(self.map_fd("counters")).max_entries
        if held != options.max_ifaces:
            raise PinError(f"the maps pinned under {options.pin_dir} hold {held} interfaces, not "
                           f"{options.max_ifaces}", hint=f"use --max-interfaces {held}, or `tcflow detach --all` "
                           "first")

    def _load(self, name: str, prog_type: int, insns: bytes) -> int:
        from bcc import libbcc

        lib = libbcc.lib
        mod = self.bpf.module
        buf = ctypes.create_string_buffer(insns, len(insns))
        log = ctypes.create_string_buffer(1 << 16)  # the verifier's words, for the error
        fd = lib.bcc_func_load(mod, prog_type, name.encode(), buf, len(insns),
                               lib.bpf_module_license(mod), lib.bpf_module_kern_version(mod),
                               0, log, len(log), None, -1)
        if fd < 0:
            err = ctypes.get_errno()
            if err == 1:
                raise PermissionError_("loading BPF programs needs root", hint="run tcflow with sudo")
            detail = log.value.decode(errors="replace").strip().splitlines()
            raise CompileError(f"the kernel refused {name}: {os.strerror(err)}"
                               + (f": {detail[-1]}" if detail else ""))
        return fd

    def prog(self, name: str, netns_cookie: int) -> int:
        """The fd of program ``name`` for one network namespace, loaded on first use."""
        with self._lock:
            fd = self._progs.get((name, netns_cookie))
            if fd is None:
                insns = patch_imm64(self.bpf.dump_func(name.encode()), PLACEHOLDER, netns_cookie)
                fd = self._load(name, self._types[name], insns)
                self._progs[(name, netns_cookie)] = fd
            return fd

    def program_stats(self) -> dict[str, tuple[int, int]]:
        """{program: (runs, run time in ns)} summed over the namespaces it was
        loaded for. The kernel counts only while BPF statistics are enabled."""
        with self._lock:
            out = dict(self._retired)
            for (name, _cookie), fd in self._progs.items():
                _add_stats(out, name, fd)
        return out

    def release(self, netns_cookie: int) -> None:
        """Close the programs loaded for one namespace (which tcflow no longer serves)."""
        with self._lock:
            for key in [k for k in self._progs if k[1] == netns_cookie]:
                fd = self._progs.pop(key)
                _add_stats(self._retired, key[0], fd)
                os.close(fd)

    @property
    def programs_loaded(self) -> int:
        return len(self._progs)

    def map_fd(self, name: str) -> int:
        return int(self.bpf[name.encode()].get_fd())

    def map_ids(self) -> set[int]:
        """The kernel's ids of this module's maps (to tell its pins from others')."""
        names = ("ifaces", "counters", "meta") if self.options.pin_dir else ("ifaces", "counters")
        return {_libbpf.map_info(self.map_fd(n)).id for n in names}

    def __enter__(self) -> "Datapath":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Close every program fd and the module (its maps go unless pinned)."""
        with self._lock:
            for fd in self._progs.values():
                os.close(fd)
            self._progs.clear()
        self.bpf.cleanup()


def _add_stats(into: dict[str, tuple[int, int]], name: str, fd: int) -> None:
    info = _libbpf.prog_info(fd)
    short = name[len("tcflow_"):]
    cnt, ns = into.get(short, (0, 0))
    into[short] = (cnt + info.run_cnt, ns + info.run_time_ns)
