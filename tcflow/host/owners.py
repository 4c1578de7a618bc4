"""Who owns tcflow's programs on a hook: a live process, a pin directory, or nobody.

A program on an interface's hook says, through the kernel, which maps it
uses. Its ``counters`` map is the key to everything else:

  - a running tcflow holds file descriptors of its programs or of that map
    (an adopting `serve --pin` holds only the maps): /proc/PID/fdinfo names
    the program and map ids behind each descriptor, so the holder's pid is
    the kernel's word, not a record that a killed process could leave wrong;
  - a pinned tcflow's map is a file on a bpf filesystem: the pin directory
    is the one whose ``counters`` file is that same map, whatever --pin-dir
    made it.

Both searches are bounded: /proc is read once per call (every process's
descriptors: status and detach run it once, never per packet or per tick),
and the bpf filesystems are walked to a fixed depth and number of entries.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from typing import Iterable, Optional

from tcflow.bpf import libbpf
from tcflow.bpf.abi import MAP_LAYOUT
from tcflow.bpf.loader import is_ours
from tcflow.model.errors import TcflowError
from tcflow.model.names import shown

PIN_WALK_DEPTH = 4
PIN_WALK_ENTRIES = 20000
FDINFO_ID = re.compile(rb"^(prog_id|map_id):\s*(\d+)\s*$", re.M)


@dataclass
class Holder:
    """A process holding some of the programs or maps asked about."""

    pid: int
    command: str
    progs: set[int] = field(default_factory=set)
    maps: set[int] = field(default_factory=set)


def counters_of(prog_id: int) -> Optional[int]:
    """The id of the counters map a loaded program uses; None if the program
    is gone (or uses none)."""
    try:
        fd = libbpf.prog_fd_by_id(prog_id)
    except TcflowError:
        return None
    try:
        for map_id in libbpf.prog_map_ids(fd):
            try:
                mfd = libbpf.map_fd_by_id(map_id)
            except TcflowError:
                continue
            try:
                info = libbpf.map_info(mfd)
            finally:
                os.close(mfd)
            if (info.name.decode(errors="replace"), info.type, info.key_size, info.value_size) \
                    == MAP_LAYOUT["counters"]:
                return int(map_id)
    except TcflowError:
        return None
    finally:
        os.close(fd)
    return None


def _command(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read(4096).split(b"\0")
    except OSError:
        return "?"
    words = [w for w in argv if w]
    # `python3 -m tcflow ...` or `/usr/local/bin/tcflow ...`: from the word tcflow on
    for i, w in enumerate(words):
        if os.path.basename(w) == b"tcflow" or w == b"tcflow":
            words = [b"tcflow", *words[i + 1:]]
            break
    return shown(os.fsdecode(b" ".join(words[:8])))[:100] or "?"


def holders(prog_ids: Iterable[int], map_ids: Iterable[int]) -> list[Holder]:
    """Every other process holding a descriptor of one of these programs or
    maps, by pid. Processes that go (or that hide their fds) meanwhile are
    skipped."""
    progs, maps = set(prog_ids), set(map_ids)
    if not progs and not maps:
        return []
    me = os.getpid()
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        pid = int(name)
        h = Holder(pid, "")
        try:
            with os.scandir(f"/proc/{pid}/fd") as it:
                fds = [e.name for e in it]
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link not in ("anon_inode:bpf-prog", "anon_inode:bpf-map"):
                continue
            try:
                with open(f"/proc/{pid}/fdinfo/{fd}", "rb") as f:
                    m = FDINFO_ID.search(f.read(4096))
            except OSError:
                continue
            if m is None:
                continue
            kind, num = m.group(1), int(m.group(2))
            if kind == b"prog_id" and num in progs:
                h.progs.add(num)
            elif kind == b"map_id" and num in maps:
                h.maps.add(num)
        if h.progs or h.maps:
            h.command = _command(pid)
            out.append(h)
    return out


@dataclass
class Survey:
    """Of some programs on hooks: each one's counters map (``counters``:
    program id -> map id, None if gone), the pin directory of each counters
    map (``dirs``), and the other processes holding any of them (``live``)."""

    counters: dict[int, Optional[int]]
    dirs: dict[int, str]
    live: list[Holder]

    def maps(self, programs: Iterable[int]) -> set[int]:
        return {m for p in programs if (m := self.counters.get(p))}


def survey(programs: Iterable[int], first: Iterable[str] = ()) -> Survey:
    """Who holds these programs and where their pins are, in one pass each."""
    counters = {p: counters_of(p) for p in set(programs)}
    maps = {m for m in counters.values() if m}
    return Survey(counters, pin_dirs(maps, first=first), holders(counters, maps))


def _bpf_mounts() -> list[str]:
    out: list[str] = []
    try:
        with open("/proc/self/mountinfo", "rb") as f:
            lines = f.read(1 << 20).splitlines()
    except OSError:
        return out
    for line in lines:
        left, _, right = line.partition(b" - ")
        fields, rest = left.split(), right.split()
        if len(fields) >= 5 and rest and rest[0] == b"bpf":
            point = re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m.group(1), 8)]), fields[4])
            out.append(os.fsdecode(point))
    return sorted(set(out))


def pin_dirs(counters_ids: Iterable[int], first: Iterable[str] = ()) -> dict[int, str]:
    """{counters map id: the pin directory whose ``counters`` is that map}.

    The directories in ``first`` are tried first; then every bpf filesystem
    is walked (never through a link; bounded in depth and entries)."""
    wanted = set(counters_ids)
    found: dict[int, str] = {}

    def look(d: str) -> None:
        path = os.path.join(d, "counters")
        if not is_ours(path, "counters"):
            return
        try:
            fd = libbpf.obj_get(path)
        except (OSError, TcflowError):
            return
        try:
            map_id = int(libbpf.map_info(fd).id)
        except TcflowError:
            return
        finally:
            os.close(fd)
        if map_id in wanted and map_id not in found:
            found[map_id] = d

    for d in first:
        look(d)
    budget = PIN_WALK_ENTRIES
    stack = [(m, 0) for m in _bpf_mounts()]
    while stack and budget > 0 and not wanted <= set(found):
        d, depth = stack.pop()
        try:
            with os.scandir(d) as it:
                entries = list(it)[:budget]
        except OSError:
            continue
        budget -= len(entries)
        names = {e.name for e in entries}
        if {"counters", "ifaces", "meta"} <= names:
            look(d)
        if depth < PIN_WALK_DEPTH:
            for e in entries:
                try:
                    if stat.S_ISDIR(e.stat(follow_symlinks=False).st_mode):
                        stack.append((e.path, depth + 1))
                except OSError:
                    continue
    return found
