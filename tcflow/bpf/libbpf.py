"""tcflow's bpf(2) calls, through libbpf (Debian's libbpf1) with ctypes.

Creating maps, loading programs, reading and writing map entries (batch reads
too), pinning, fetching objects by id, BPF_PROG_TEST_RUN (tests, benchmarks).
Pure ctypes, no compile step: this and the cached program image are all an
agent needs (tcflow/bpf/build.py keeps bcc in a child process).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from typing import Any, Iterator, Optional

from tcflow.model.errors import DependencyError, TcflowError

_lib: Optional[ctypes.CDLL] = None


def lib() -> ctypes.CDLL:
    global _lib
    if _lib is None:
        name = ctypes.util.find_library("bpf") or "libbpf.so.1"
        try:
            _lib = ctypes.CDLL(name, use_errno=True)
        except OSError as e:
            raise DependencyError(
                f"cannot load libbpf ({e})", hint="apt-get install libbpf1"
            ) from None
        _declare(_lib)
    return _lib


class TestRunOpts(ctypes.Structure):
    """struct bpf_test_run_opts (libbpf >= 0.7)."""

    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("data_in", ctypes.c_void_p),
        ("data_out", ctypes.c_void_p),
        ("data_size_in", ctypes.c_uint32),
        ("data_size_out", ctypes.c_uint32),
        ("ctx_in", ctypes.c_void_p),
        ("ctx_out", ctypes.c_void_p),
        ("ctx_size_in", ctypes.c_uint32),
        ("ctx_size_out", ctypes.c_uint32),
        ("retval", ctypes.c_uint32),
        ("repeat", ctypes.c_int),
        ("duration", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("cpu", ctypes.c_uint32),
        ("batch_size", ctypes.c_uint32),
    ]


class MapBatchOpts(ctypes.Structure):
    _fields_ = [("sz", ctypes.c_size_t), ("elem_flags", ctypes.c_uint64), ("flags", ctypes.c_uint64)]


class SkBuff(ctypes.Structure):
    """The leading part of struct __sk_buff (UAPI), as BPF_PROG_TEST_RUN takes it.

    The kernel accepts a prefix of its own struct; only the fields it allows
    (ifindex, gso_segs, gso_size, wire_len, ...) may be non-zero.
    """

    _fields_ = [
        ("len", ctypes.c_uint32),
        ("pkt_type", ctypes.c_uint32),
        ("mark", ctypes.c_uint32),
        ("queue_mapping", ctypes.c_uint32),
        ("protocol", ctypes.c_uint32),
        ("vlan_present", ctypes.c_uint32),
        ("vlan_tci", ctypes.c_uint32),
        ("vlan_proto", ctypes.c_uint32),
        ("priority", ctypes.c_uint32),
        ("ingress_ifindex", ctypes.c_uint32),
        ("ifindex", ctypes.c_uint32),
        ("tc_index", ctypes.c_uint32),
        ("cb", ctypes.c_uint32 * 5),
        ("hash", ctypes.c_uint32),
        ("tc_classid", ctypes.c_uint32),
        ("data", ctypes.c_uint32),
        ("data_end", ctypes.c_uint32),
        ("napi_id", ctypes.c_uint32),
        ("family", ctypes.c_uint32),
        ("remote_ip4", ctypes.c_uint32),
        ("local_ip4", ctypes.c_uint32),
        ("remote_ip6", ctypes.c_uint32 * 4),
        ("local_ip6", ctypes.c_uint32 * 4),
        ("remote_port", ctypes.c_uint32),
        ("local_port", ctypes.c_uint32),
        ("data_meta", ctypes.c_uint32),
        ("flow_keys", ctypes.c_uint64),
        ("tstamp", ctypes.c_uint64),
        ("wire_len", ctypes.c_uint32),
        ("gso_segs", ctypes.c_uint32),
        ("sk", ctypes.c_uint64),
        ("gso_size", ctypes.c_uint32),
    ]


def _declare(lb: ctypes.CDLL) -> None:
    lb.bpf_map_create.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32, ctypes.c_uint32,
                                  ctypes.c_uint32, ctypes.c_void_p]
    lb.bpf_prog_load.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p,
                                 ctypes.c_size_t, ctypes.c_void_p]
    lb.bpf_prog_test_run_opts.argtypes = [ctypes.c_int, ctypes.POINTER(TestRunOpts)]
    lb.bpf_map_lookup_batch.argtypes = [
        ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
        ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint32), ctypes.POINTER(MapBatchOpts),
    ]
    lb.bpf_obj_pin.argtypes = [ctypes.c_int, ctypes.c_char_p]
    lb.bpf_obj_get.argtypes = [ctypes.c_char_p]
    lb.bpf_prog_get_fd_by_id.argtypes = [ctypes.c_uint32]
    lb.bpf_map_get_fd_by_id.argtypes = [ctypes.c_uint32]
    lb.bpf_enable_stats.argtypes = [ctypes.c_int]
    lb.libbpf_num_possible_cpus.argtypes = []
    for fn in ("bpf_map_lookup_elem", "bpf_map_get_next_key"):
        getattr(lb, fn).argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
    lb.bpf_map_update_elem.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint64]
    lb.bpf_map_delete_elem.argtypes = [ctypes.c_int, ctypes.c_void_p]
    lb.bpf_obj_get_info_by_fd.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint32)]


def _check(ret: int, what: str) -> int:
    if ret < 0:
        err = ctypes.get_errno() or -ret
        raise TcflowError(f"{what} failed: {os.strerror(err)}", errno=err)
    return ret


class ProgLoadOpts(ctypes.Structure):
    """struct bpf_prog_load_opts up to log_buf (libbpf >= 1.0; newer fields stay 0)."""

    _fields_ = [("sz", ctypes.c_size_t), ("attempts", ctypes.c_int), ("expected_attach_type", ctypes.c_int),
                ("prog_btf_fd", ctypes.c_uint32), ("prog_flags", ctypes.c_uint32),
                ("prog_ifindex", ctypes.c_uint32), ("kern_version", ctypes.c_uint32),
                ("attach_btf_id", ctypes.c_uint32), ("attach_prog_fd", ctypes.c_uint32),
                ("attach_btf_obj_fd", ctypes.c_uint32), ("fd_array", ctypes.c_void_p),
                ("func_info", ctypes.c_void_p), ("func_info_cnt", ctypes.c_uint32),
                ("func_info_rec_size", ctypes.c_uint32), ("line_info", ctypes.c_void_p),
                ("line_info_cnt", ctypes.c_uint32), ("line_info_rec_size", ctypes.c_uint32),
                ("log_level", ctypes.c_uint32), ("log_size", ctypes.c_uint32), ("log_buf", ctypes.c_void_p)]


class MapCreateOpts(ctypes.Structure):
    """struct bpf_map_create_opts (libbpf 1.x) up to map_ifindex."""

    _fields_ = [("sz", ctypes.c_size_t), ("btf_fd", ctypes.c_uint32), ("btf_key_type_id", ctypes.c_uint32),
                ("btf_value_type_id", ctypes.c_uint32), ("btf_vmlinux_value_type_id", ctypes.c_uint32),
                ("inner_map_fd", ctypes.c_uint32), ("map_flags", ctypes.c_uint32), ("map_extra", ctypes.c_uint64),
                ("numa_node", ctypes.c_uint32), ("map_ifindex", ctypes.c_uint32)]


def map_create(map_type: int, name: str, key_size: int, value_size: int, max_entries: int, flags: int = 0) -> int:
    """A new map's fd (close it when done)."""
    opts = MapCreateOpts(sz=ctypes.sizeof(MapCreateOpts), map_flags=flags) if flags else None
    return _check(lib().bpf_map_create(map_type, name.encode(), key_size, value_size, max_entries,
                                       ctypes.byref(opts) if opts is not None else None),
                  f"creating BPF map {name}")


def prog_load(prog_type: int, name: str, insns: bytes, log_size: int = 1 << 16) -> int:
    """Load (the kernel verifies) one program; its fd. On refusal the
    TcflowError carries errno and the verifier's last line."""
    buf = ctypes.create_string_buffer(insns, len(insns))
    ret = lib().bpf_prog_load(prog_type, name.encode(), b"GPL", buf, len(insns) // 8, None)
    if ret >= 0:
        return ret
    err = ctypes.get_errno() or -ret
    # again, with a log, for the verifier's words (only on the failure path: a
    # log makes the kernel print every step)
    log = ctypes.create_string_buffer(log_size)
    opts = ProgLoadOpts(sz=ctypes.sizeof(ProgLoadOpts), log_level=1, log_size=log_size,
                        log_buf=ctypes.cast(log, ctypes.c_void_p))
    ret = lib().bpf_prog_load(prog_type, name.encode(), b"GPL", buf, len(insns) // 8, ctypes.byref(opts))
    if ret >= 0:
        return ret  # refused once, then taken: a transient failure (memory)
    lines = [ln for ln in log.value.decode(errors="replace").splitlines() if ln.strip()]
    detail = next((ln for ln in reversed(lines) if not ln.startswith(("processed ", "verification time"))), "")
    raise TcflowError(f"the kernel refused {name}: {os.strerror(err)}" + (f": {detail}" if detail else ""),
                      errno=err)


def num_possible_cpus() -> int:
    return _check(lib().libbpf_num_possible_cpus(), "libbpf_num_possible_cpus")


def test_run(prog_fd: int, data: bytes, *, ctx: Optional[ctypes.Structure] = None,
             repeat: int = 1) -> tuple[int, int]:
    """Run a loaded program on one frame. Returns (retval, ns per run)."""
    buf = ctypes.create_string_buffer(data, len(data))
    out = ctypes.create_string_buffer(len(data) + 256)
    opts = TestRunOpts()
    opts.sz = ctypes.sizeof(TestRunOpts)
    opts.data_in = ctypes.cast(buf, ctypes.c_void_p)
    opts.data_size_in = len(data)
    opts.data_out = ctypes.cast(out, ctypes.c_void_p)
    opts.data_size_out = len(out)
    opts.repeat = repeat
    if ctx is not None:
        opts.ctx_in = ctypes.cast(ctypes.pointer(ctx), ctypes.c_void_p)
        opts.ctx_size_in = ctypes.sizeof(ctx)
    _check(lib().bpf_prog_test_run_opts(prog_fd, ctypes.byref(opts)), "BPF_PROG_TEST_RUN")
    return opts.retval, opts.duration


def lookup_batch(map_fd: int, key_size: int, value_size: int, count: int,
                 into: Optional[tuple[Any, Any]] = None) -> tuple[Any, Any, int]:
    """Read up to ``count`` entries from the start of an array map.

    Returns (keys, values, n). For per-CPU maps ``value_size`` is the
    per-CPU stride times the number of possible CPUs. ``into``: two ctypes
    buffers at least that large, filled and returned instead of bytes (a
    reader that reads megabytes every second keeps its buffers: no fresh
    pages, no copy).
    """
    if into is not None:
        keys, values = into
        assert ctypes.sizeof(keys) >= key_size * count and ctypes.sizeof(values) >= value_size * count
    else:
        keys = ctypes.create_string_buffer(key_size * count)
        values = ctypes.create_string_buffer(value_size * count)
    out_batch = ctypes.c_uint32(0)
    n = ctypes.c_uint32(count)
    opts = MapBatchOpts(sz=ctypes.sizeof(MapBatchOpts))
    ret = lib().bpf_map_lookup_batch(map_fd, None, ctypes.byref(out_batch), keys, values,
                                     ctypes.byref(n), ctypes.byref(opts))
    # ENOENT means "end of map reached", with n entries filled in.
    if ret < 0 and ctypes.get_errno() != 2:
        _check(ret, "BPF_MAP_LOOKUP_BATCH")
    if into is not None:
        return keys, values, n.value
    return keys.raw, values.raw, n.value


def lookup_batches(map_fd: int, key_size: int, value_size: int, chunk: int,
                   into: tuple[Any, Any]) -> Iterator[tuple[Any, Any, int]]:
    """Every entry of a map, at most ``chunk`` at a time, each chunk read into
    the same two ctypes buffers (keys, values: ``chunk`` entries each), which
    it yields with how many it holds: a reader of megabytes keeps a small
    buffer. The caller is done with a chunk when it asks for the next."""
    keys, values = into
    assert ctypes.sizeof(keys) >= key_size * chunk and ctypes.sizeof(values) >= value_size * chunk
    token_in, token_out = ctypes.c_uint32(0), ctypes.c_uint32(0)
    opts = MapBatchOpts(sz=ctypes.sizeof(MapBatchOpts))
    first = True
    while True:
        n = ctypes.c_uint32(chunk)
        ret = lib().bpf_map_lookup_batch(map_fd, None if first else ctypes.byref(token_in), ctypes.byref(token_out),
                                         keys, values, ctypes.byref(n), ctypes.byref(opts))
        end = ret < 0 and ctypes.get_errno() == 2  # ENOENT: the end of the map, n entries filled in
        if ret < 0 and not end:
            _check(ret, "BPF_MAP_LOOKUP_BATCH")
        if n.value:
            yield keys, values, n.value
        if end or not n.value:
            return
        token_in.value, first = token_out.value, False


def obj_pin(fd: int, path: str) -> None:
    _check(lib().bpf_obj_pin(fd, path.encode()), f"pinning {path}")


def obj_get(path: str) -> int:
    return _check(lib().bpf_obj_get(path.encode()), f"opening pinned {path}")


def prog_fd_by_id(prog_id: int) -> int:
    return _check(lib().bpf_prog_get_fd_by_id(prog_id), f"opening BPF program id {prog_id}")


def enable_stats() -> int:
    """BPF_STATS_RUN_TIME on while the returned fd is open."""
    return _check(lib().bpf_enable_stats(0), "BPF_ENABLE_STATS")


class MapInfo(ctypes.Structure):
    """The head of struct bpf_map_info (the kernel fills only what fits)."""

    _fields_ = [("type", ctypes.c_uint32), ("id", ctypes.c_uint32), ("key_size", ctypes.c_uint32),
                ("value_size", ctypes.c_uint32), ("max_entries", ctypes.c_uint32),
                ("map_flags", ctypes.c_uint32), ("name", ctypes.c_char * 16)]


class ProgInfo(ctypes.Structure):
    """The head of struct bpf_prog_info, up to verified_insns (linux/bpf.h order; 0 where the kernel is older)."""

    _fields_ = [("type", ctypes.c_uint32), ("id", ctypes.c_uint32), ("tag", ctypes.c_uint8 * 8),
                ("jited_prog_len", ctypes.c_uint32), ("xlated_prog_len", ctypes.c_uint32),
                ("jited_prog_insns", ctypes.c_uint64), ("xlated_prog_insns", ctypes.c_uint64),
                ("load_time", ctypes.c_uint64), ("created_by_uid", ctypes.c_uint32),
                ("nr_map_ids", ctypes.c_uint32), ("map_ids", ctypes.c_uint64), ("name", ctypes.c_char * 16),
                ("ifindex", ctypes.c_uint32), ("gpl_compatible", ctypes.c_uint32), ("netns_dev", ctypes.c_uint64),
                ("netns_ino", ctypes.c_uint64), ("nr_jited_ksyms", ctypes.c_uint32),
                ("nr_jited_func_lens", ctypes.c_uint32), ("jited_ksyms", ctypes.c_uint64),
                ("jited_func_lens", ctypes.c_uint64), ("btf_id", ctypes.c_uint32),
                ("func_info_rec_size", ctypes.c_uint32), ("func_info", ctypes.c_uint64),
                ("nr_func_info", ctypes.c_uint32), ("nr_line_info", ctypes.c_uint32), ("line_info", ctypes.c_uint64),
                ("jited_line_info", ctypes.c_uint64), ("nr_jited_line_info", ctypes.c_uint32),
                ("line_info_rec_size", ctypes.c_uint32), ("jited_line_info_rec_size", ctypes.c_uint32),
                ("nr_prog_tags", ctypes.c_uint32), ("prog_tags", ctypes.c_uint64), ("run_time_ns", ctypes.c_uint64),
                ("run_cnt", ctypes.c_uint64), ("recursion_misses", ctypes.c_uint64),
                ("verified_insns", ctypes.c_uint32)]


def map_info(fd: int) -> MapInfo:
    info = MapInfo()
    ln = ctypes.c_uint32(ctypes.sizeof(info))
    _check(lib().bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(ln)), "BPF_OBJ_GET_INFO_BY_FD")
    return info


def prog_info(fd: int) -> ProgInfo:
    info = ProgInfo()
    ln = ctypes.c_uint32(ctypes.sizeof(info))
    _check(lib().bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(ln)), "BPF_OBJ_GET_INFO_BY_FD")
    return info


def prog_map_ids(fd: int) -> list[int]:
    """The ids of the maps a loaded program uses."""
    for _ in range(3):  # the count is read first; a second call fills them in
        n = prog_info(fd).nr_map_ids
        ids = (ctypes.c_uint32 * max(n, 1))()
        info = ProgInfo(nr_map_ids=n, map_ids=ctypes.addressof(ids))
        ln = ctypes.c_uint32(ctypes.sizeof(info))
        _check(lib().bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(ln)), "BPF_OBJ_GET_INFO_BY_FD")
        if info.nr_map_ids <= n:
            return list(ids[:info.nr_map_ids])
    return []


def map_fd_by_id(map_id: int) -> int:
    return _check(lib().bpf_map_get_fd_by_id(map_id), f"opening BPF map id {map_id}")


Key = ctypes.Structure | ctypes.c_uint32 | ctypes.Array


def map_lookup(fd: int, key: Key, value: ctypes.Array | ctypes.Structure) -> bool:
    """Fill ``value`` with the entry for ``key``; False if there is none."""
    ret = lib().bpf_map_lookup_elem(fd, ctypes.byref(key), ctypes.byref(value))
    if ret < 0 and ctypes.get_errno() == 2:
        return False
    _check(ret, "BPF_MAP_LOOKUP_ELEM")
    return True


def map_update(fd: int, key: Key, value: ctypes.Array | ctypes.Structure) -> None:
    _check(lib().bpf_map_update_elem(fd, ctypes.byref(key), ctypes.byref(value), 0), "BPF_MAP_UPDATE_ELEM")


def map_delete(fd: int, key: ctypes.Structure | ctypes.c_uint32 | ctypes.Array) -> bool:
    ret = lib().bpf_map_delete_elem(fd, ctypes.byref(key))
    if ret < 0 and ctypes.get_errno() == 2:
        return False
    _check(ret, "BPF_MAP_DELETE_ELEM")
    return True


def map_keys(fd: int, key_type: type) -> list:
    """Every key of a hash map (a snapshot: entries may change meanwhile)."""
    out: list[Any] = []
    prev, cur = None, key_type()
    while True:
        ret = lib().bpf_map_get_next_key(fd, None if prev is None else ctypes.byref(prev), ctypes.byref(cur))
        if ret < 0:
            if ctypes.get_errno() == 2:
                return out
            _check(ret, "BPF_MAP_GET_NEXT_KEY")
        out.append(cur)
        prev, cur = cur, key_type()
