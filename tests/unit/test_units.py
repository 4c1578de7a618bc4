"""Unit tier (no root): class table, C/Python agreement, snapshot arithmetic,
the netns-cookie patch, header discovery, and the reference's hand figures."""

from __future__ import annotations

import os
import re
import struct
from collections import Counter

import pytest

from tcflow import classes
from tcflow.counters import VALUE_SIZE, WORDS_PER_SLOT, make_snapshot, sum_percpu
from tcflow.errors import CompileError, DependencyError
from tcflow.kheaders import locate
from tcflow.loader import PLACEHOLDER, SOURCE, patch_imm64
from tests.traffic_gen.frames import cases
from tests.traffic_gen.reference import classify


def test_seed_numbering_is_fixed() -> None:
    assert classes.SEED_NAMES == (
        "L4_TCP_SEND_V4", "L4_TCP_RECV_V4", "L4_UDP_SEND_V4", "L4_UDP_RECV_V4",
        "L3_TCP_SEND_V4", "L3_UDP_SEND_V4", "L3_RAW_SEND_V4",
        "L4_TCP_SEND_V6", "L4_TCP_RECV_V6", "L4_UDP_SEND_V6", "L4_UDP_RECV_V6",
        "L3_TCP_SEND_V6", "L3_UDP_SEND_V6", "L3_RAW_SEND_V6")
    assert [c.index for c in classes.CLASSES] == list(range(classes.NUM_CLASSES))


def test_c_indices_agree_with_python() -> None:
    src = open(SOURCE).read()
    d = {k: int(v) for k, v in re.findall(r"#define (\w+) (\d+)\b", src)}
    assert d["NUM_CLASSES"] == classes.NUM_CLASSES
    for fam in (0, 1):
        sfx = "V4" if fam == 0 else "V6"
        for off in ("L4_TCP_SEND", "L4_TCP_RECV", "L4_UDP_SEND", "L4_UDP_RECV",
                    "L3_TCP_SEND", "L3_UDP_SEND", "L3_RAW_SEND"):
            assert classes.BY_NAME[f"{off}_{sfx}"].index == fam * d["FAM_STRIDE"] + d[f"OFF_{off}"]
        for i, proto in enumerate(("TCP", "UDP", "RAW")):
            assert classes.BY_NAME[f"L3_{proto}_RECV_{sfx}"].index == d["L3_RECV_BASE"] + fam * 3 + i
    for kind in ("OTHER", "LOCAL", "MALFORMED"):
        assert classes.BY_NAME[f"{kind}_RECV"].index == d[f"{kind}_RECV"]
        assert classes.BY_NAME[f"{kind}_SEND"].index == d[f"{kind}_RECV"] + 1


def _slot(values: list[int]) -> list[int]:
    return values + [0] * (WORDS_PER_SLOT - len(values))


def test_sum_percpu_sums_cpus_per_slot_and_wraps() -> None:
    ncpus = 3
    words: list[int] = []
    for slot in range(2):
        for cpu in range(ncpus):
            w = _slot([slot * 100 + cpu + 1])
            w[classes.NUM_CLASSES] = 1  # one packet per CPU in class 0
            if slot == 1 and cpu == 0:
                w[5] = 2**64 - 1
            if slot == 1 and cpu == 2:
                w[5] = 2
            words += w
    raw = struct.pack(f"<{len(words)}Q", *words)
    assert len(raw) == 2 * ncpus * VALUE_SIZE
    out = sum_percpu(raw, ncpus, 2)
    assert out[0][0][0] == 1 + 2 + 3 and out[0][1][0] == 3
    assert out[1][0][0] == 101 + 102 + 103
    assert out[1][0][5] == 1  # (2**64 - 1) + 2 wraps, as a u64 does


def test_snapshot_rates() -> None:
    zero = [0] * classes.NUM_CLASSES
    b1 = list(zero)
    b1[0] = 1000
    s0 = make_snapshot([("v0", "ns1", 2, {}, zero, zero)], now=0, mono=10.0)
    s1 = make_snapshot([("v0", "ns1", 2, {}, b1, zero)], now=0, mono=12.0)
    assert set(s1.interfaces) == {"ns1/v0"}
    assert s1.rates(s0)["ns1/v0"]["L4_TCP_SEND_V4"] == 500.0
    s2 = make_snapshot([("v0", "ns1", 2, {}, zero, zero)], now=0, mono=13.0)  # a reset
    assert s2.rates(s1)["ns1/v0"]["L4_TCP_SEND_V4"] == 0.0  # never negative
    assert s0.rates(s1) == {}  # time going backwards gives no rates


def _ld_imm64(value: int, dst: int = 1) -> bytes:
    return struct.pack("<BBhI", 0x18, dst, 0, value & 0xFFFFFFFF) + struct.pack("<BBhI", 0, 0, 0, value >> 32)


def test_patch_imm64_replaces_exactly_one() -> None:
    exit_insn = struct.pack("<BBhI", 0x95, 0, 0, 0)
    prog = _ld_imm64(7) + _ld_imm64(PLACEHOLDER) + exit_insn
    out = patch_imm64(prog, PLACEHOLDER, 0x1122334455667788)
    assert out == _ld_imm64(7) + _ld_imm64(0x1122334455667788) + exit_insn
    with pytest.raises(CompileError):
        patch_imm64(_ld_imm64(7) + exit_insn, PLACEHOLDER, 1)
    with pytest.raises(CompileError):
        patch_imm64(_ld_imm64(PLACEHOLDER) * 2, PLACEHOLDER, 1)


def _debian_tree(root: str) -> None:
    common = os.path.join(root, "src/linux-headers-6.1.0-9-common")
    flav = os.path.join(root, "src/linux-headers-6.1.0-9-amd64")
    for d in ("include/linux", "include/uapi", "arch/x86/include/asm"):
        os.makedirs(os.path.join(common, d))
    open(os.path.join(common, "include/linux/kconfig.h"), "w").close()
    for d in ("include/generated", "include/config", "arch/x86/include/generated"):
        os.makedirs(os.path.join(flav, d))


def test_headers_prefer_env_then_modules(tmp_path) -> None:  # noqa: ANN001
    assert locate({"BCC_KERNEL_SOURCE": str(tmp_path)}).source == "env"
    with pytest.raises(DependencyError, match="BCC_KERNEL_SOURCE=/nonexistent is not a directory"):
        locate({"BCC_KERNEL_SOURCE": "/nonexistent"})
    mod = tmp_path / "modules/9.9.9/build/include/linux"
    mod.mkdir(parents=True)
    (mod / "kconfig.h").touch()
    h = locate({}, release="9.9.9", modules_dir=str(tmp_path / "modules"), usr_src=str(tmp_path / "none"))
    assert h.source == "modules" and h.note == ""


def test_headers_fallback_merges_debian_split_tree(tmp_path) -> None:  # noqa: ANN001
    if os.path.exists("/sys/kernel/kheaders.tar.xz"):
        pytest.skip("this kernel has in-kernel headers, which come before the fallback")
    _debian_tree(str(tmp_path))
    h = locate({}, release="9.9.9", modules_dir=str(tmp_path / "none"), usr_src=str(tmp_path / "src"),
               cache_dir=str(tmp_path / "cache"))
    assert h.source == "fallback" and "BCC_KERNEL_SOURCE" in h.note
    for sub in ("include/linux/kconfig.h", "include/generated", "include/config", "arch/x86/include/asm",
                "arch/x86/include/generated"):
        assert os.path.exists(os.path.join(h.path, sub)), sub
    again = locate({}, release="9.9.9", modules_dir=str(tmp_path / "none"), usr_src=str(tmp_path / "src"),
                   cache_dir=str(tmp_path / "cache"))
    assert again.path == h.path  # built once, reused


def test_headers_missing_says_what_to_install(tmp_path) -> None:  # noqa: ANN001
    if os.path.exists("/sys/kernel/kheaders.tar.xz"):
        pytest.skip("this kernel has in-kernel headers")
    with pytest.raises(DependencyError, match="apt-get install linux-headers"):
        locate({}, release="9.9.9", modules_dir=str(tmp_path), usr_src=str(tmp_path))


@pytest.mark.parametrize("case", cases(), ids=[c.name for c in cases()])
def test_reference_agrees_with_hand_figures(case) -> None:  # noqa: ANN001
    b, p = classify(case.frame, "send", segs=case.segs, include_local=case.include_local)
    assert {k: b.get(k, 0) for k in case.expect} == case.expect
    assert set(+b) <= set(case.expect)  # nothing counted anywhere else


def test_reference_vlan_in_metadata_counts_toward_two() -> None:
    from scapy.layers.inet import IP, UDP

    from tests.traffic_gen.frames import A4, B4, eth, pl

    two = eth(IP(src=A4, dst=B4) / UDP() / pl(5), [(0x8100, 1), (0x8100, 2)])
    assert classify(two, "recv")[0]["L4_UDP_RECV_V4"] == 5
    from tests.traffic_gen.reference import parse
    assert parse(two, tags_outside=1) is None  # a third tag: not IP to us


def test_hostile_generator_reaches_every_outcome() -> None:
    """The fuzz frames are not all rejected early: every kind of result occurs."""
    from tests.traffic_gen.frames import MAX_TEST_FRAME, hostile

    seen: Counter = Counter()
    frames = hostile(2026, 3000)
    for f in frames:
        b, _ = classify(f, "send")
        seen.update(b.keys())
    for name in ("MALFORMED_SEND", "OTHER_SEND", "LOCAL_SEND", "L4_TCP_SEND_V4", "L4_UDP_SEND_V6",
                 "L3_RAW_SEND_V4", "L3_RAW_SEND_V6", "L4_UDP_SEND_V4", "L4_TCP_SEND_V6"):
        assert seen[name] > 0, name
    assert max(len(f) for f in frames) <= MAX_TEST_FRAME
    assert hostile(7, 50) == hostile(7, 50)  # seeded: a failure can be replayed
