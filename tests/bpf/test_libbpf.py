"""libbpf through ctypes against real maps: a read in chunks sees every entry
once, whatever the chunk (the flow table and its cache are read this way)."""

from __future__ import annotations

import ctypes
import os
import struct

import pytest

from tcflow.bpf import abi, libbpf


@pytest.mark.parametrize("mtype", [abi.BPF_MAP_TYPE_PERCPU_HASH, abi.BPF_MAP_TYPE_PERCPU_ARRAY])
def test_a_map_read_in_chunks_gives_every_entry_once(mtype: int) -> None:
    ncpus = libbpf.num_possible_cpus()
    n, chunk, vsize = 5000, 1024, 8
    flags = abi.BPF_F_NO_PREALLOC if mtype == abi.BPF_MAP_TYPE_PERCPU_HASH else 0
    fd = libbpf.map_create(mtype, "tcflow_test", 4, vsize, n + 7, flags)
    try:
        for k in range(n):
            libbpf.map_update(fd, ctypes.c_uint32(k * 7 + 1 if mtype == abi.BPF_MAP_TYPE_PERCPU_HASH else k),
                              (ctypes.c_uint64 * ncpus)(*[k * 10 + cpu for cpu in range(ncpus)]))
        bufs = (ctypes.create_string_buffer(4 * chunk), ctypes.create_string_buffer(vsize * ncpus * chunk))
        seen: dict[int, list[int]] = {}
        sizes = []
        for keys, vals, m in libbpf.lookup_batches(fd, 4, vsize * ncpus, chunk, bufs):
            sizes.append(m)
            assert 0 < m <= chunk
            for i in range(m):
                k = struct.unpack_from("<I", keys, 4 * i)[0]
                assert k not in seen
                seen[k] = list(struct.unpack_from(f"<{ncpus}Q", vals, i * vsize * ncpus))
        assert len(sizes) > 1  # it took more than one chunk
        if mtype == abi.BPF_MAP_TYPE_PERCPU_HASH:
            assert seen == {k * 7 + 1: [k * 10 + cpu for cpu in range(ncpus)] for k in range(n)}
        else:  # an array has all its entries, those never written are 0
            assert len(seen) == n + 7
            assert all(seen[k] == [k * 10 + cpu for cpu in range(ncpus)] for k in range(n))
    finally:
        os.close(fd)
