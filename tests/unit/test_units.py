"""Unit tier (no root): class table, C/Python agreement, snapshot arithmetic,
the netns-cookie patch, header discovery, and the reference's hand figures."""

from __future__ import annotations

import os
import re
import struct
import subprocess
from collections import Counter

import pytest

from tcflow.bpf import build
from tcflow.bpf.build import SOURCE
from tcflow.bpf.kheaders import locate
from tcflow.bpf.reader import VALUE_SIZE, WORDS_PER_SLOT, sum_percpu
from tcflow.model import classes
from tcflow.model.errors import DependencyError
from tcflow.model.snapshot import Hooks, make_snapshot
from tests.support.cases import cases
from tests.support.reference import classify

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SOURCE_ENDINGS = (".py", ".c", ".h", ".js", ".html", ".sh", ".json", ".yaml", ".yml", "Makefile")


def _spec_seed_table() -> dict[int, str]:
    """The seed numbering as docs/SPEC.md states it: rows 0-6, then "7-13 same seven, _V6"."""
    text = open(os.path.join(REPO, "docs", "SPEC.md")).read()
    rows = {int(i): n for i, n in re.findall(r"^\| (\d+) \| (\w+) \|", text, re.M)}
    assert re.search(r"^\| 7-13 \| same seven, `_V6`", text, re.M)
    rows.update({i + 7: n[:-3] + "_V6" for i, n in list(rows.items())})
    return rows


def test_seed_numbering_is_the_contracts() -> None:
    spec = _spec_seed_table()
    assert sorted(spec) == list(range(classes.SEED_COUNT))
    assert classes.SEED_NAMES == tuple(spec[i] for i in range(classes.SEED_COUNT))
    assert [c.index for c in classes.CLASSES] == list(range(classes.NUM_CLASSES))


def test_c_takes_every_index_from_the_class_table() -> None:
    """The C has no list of its own: every class index arrives as a cflag."""
    src = open(SOURCE).read()
    flags = dict(f[2:].split("=") for f in classes.cflags())
    assert flags["NUM_CLASSES"] == str(classes.NUM_CLASSES)
    for c in classes.CLASSES:
        assert flags[f"C_{c.name}"] == str(classes.CELL[c.name])
    assert sorted(classes.CELL.values()) == list(range(classes.NUM_CLASSES))
    used = set(re.findall(r"\bC_([A-Z]\w+)", src)) | {f"{s}_V4" for s in re.findall(r"CLASS\(([A-Z]\w+),", src)}
    assert used and all(f"C_{u}" in flags for u in used), used - {k[2:] for k in flags}
    assert not re.search(r"#define\s+(OFF_|FAM_STRIDE|L3_RECV_BASE|(OTHER|LOCAL|MALFORMED)_RECV)", src)


def test_no_second_list_of_the_classes() -> None:
    """model/classes.py is the only list: no other source file names six or more
    classes within five lines (test expectations name a few at a time)."""
    pat = re.compile(r"\b(" + "|".join(classes.NAMES) + r")\b")
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.split()
    offenders = []
    for f in files:
        if f == "tcflow/model/classes.py" or f.startswith("docs/") or not f.endswith(SOURCE_ENDINGS) \
                or not os.path.isfile(os.path.join(REPO, f)):
            continue
        lines = open(os.path.join(REPO, f), errors="replace").read().splitlines()
        for i in range(len(lines)):
            if len(set(pat.findall("\n".join(lines[i:i + 5])))) >= 6:
                offenders.append(f"{f}:{i + 1}")
                break
    assert offenders == []


def test_every_vocabulary_comes_from_one_class() -> None:
    """JSON key, table title and metric labels of a class are derived from one entry."""
    c = classes.BY_NAME["L4_TCP_SEND_V4"]
    assert (c.title, c.protocol_label, c.layer, c.family) == ("TCP payload sent", "tcp", "L4", "ipv4")
    assert classes.BY_NAME["L3_RAW_RECV_V6"].title == "IP bytes received, other"
    assert classes.apart("non_ip", "recv").name == "OTHER_RECV"
    assert classes.find("L3", "udp", "send", "ipv6").name == "L3_UDP_SEND_V6"
    assert [c["name"] for c in classes.catalogue()] == list(classes.NAMES)


def test_sum_percpu_sums_cpus_per_slot_and_wraps() -> None:
    """Cells are {bytes, packets} pairs at classes.CELL; the sums come back by class index."""
    ncpus = 3
    c0, c5 = (2 * classes.CELL[classes.CLASSES[i].name] for i in (0, 5))
    words: list[int] = []
    for slot in range(2):
        for cpu in range(ncpus):
            w = [0] * WORDS_PER_SLOT
            w[c0] = slot * 100 + cpu + 1
            w[c0 + 1] = 1  # one packet per CPU in class 0
            if slot == 1 and cpu == 0:
                w[c5] = 2**64 - 1
            if slot == 1 and cpu == 2:
                w[c5] = 2
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
    s0 = make_snapshot([("v0", "ns1", 2, Hooks("tc"), zero, zero)], now=0, mono=10.0)
    s1 = make_snapshot([("v0", "ns1", 2, Hooks("tc"), b1, zero)], now=0, mono=12.0)
    assert set(s1.interfaces) == {"ns1/v0"}
    assert s1.rates(s0)["ns1/v0"]["L4_TCP_SEND_V4"] == 500.0
    s2 = make_snapshot([("v0", "ns1", 2, Hooks("tc"), zero, zero)], now=0, mono=13.0)  # a reset
    assert s2.rates(s1)["ns1/v0"]["L4_TCP_SEND_V4"] == 0.0  # never negative
    assert s0.rates(s1) == {}  # time going backwards gives no rates


def _ld_imm64(value: int, dst: int = 1) -> bytes:
    return struct.pack("<BBhI", 0x18, dst, 0, value & 0xFFFFFFFF) + struct.pack("<BBhI", 0, 0, 0, value >> 32)


def test_image_links_each_map_reference_and_refuses_what_it_cannot_account_for() -> None:
    """The cached image keeps map references by name; link() writes each map's fd in."""
    exit_insn = struct.pack("<BBhI", 0x95, 0, 0, 0)
    pseudo = 0x10 | 1  # src_reg BPF_PSEUDO_MAP_FD, dst_reg r1
    prog = _ld_imm64(7) + _ld_imm64(0, pseudo) + _ld_imm64(0, pseudo) + exit_insn
    refs = ((16, "counters"), (32, "by_ifindex"))
    img = build.Image("k", {n: prog for n in build.PROGRAMS}, {n: refs for n in build.PROGRAMS})
    out = img.link(build.PROG_XDP, {"counters": 11, "by_ifindex": 12, "ifaces": 13})
    assert out == _ld_imm64(7) + _ld_imm64(11, pseudo) + _ld_imm64(12, pseudo) + exit_insn
    assert build.Image.from_json(img.to_json(), "k") == img
    with pytest.raises(ValueError):
        build.Image.from_json(img.to_json(), "another key")
    bad = build.Image("k", img.insns, {n: ((8, "counters"),) for n in build.PROGRAMS})  # not an ld_imm64
    with pytest.raises(ValueError):
        build.Image.from_json(bad.to_json(), "k")


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

    from tests.support.cases import A4, B4, eth, pl

    two = eth(IP(src=A4, dst=B4) / UDP() / pl(5), [(0x8100, 1), (0x8100, 2)])
    assert classify(two, "recv")[0]["L4_UDP_RECV_V4"] == 5
    from tests.support.reference import parse
    assert parse(two, tags_outside=1) is None  # a third tag: not IP to us


def test_hostile_generator_reaches_every_outcome() -> None:
    """The fuzz frames are not all rejected early: every kind of result occurs."""
    from tests.support.cases import MAX_TEST_FRAME, hostile

    seen: Counter = Counter()
    frames = hostile(2026, 3000)
    for f in frames:
        b, _ = classify(f, "send")
        seen.update(b.keys())
    wanted = [c.name for c in classes.CLASSES if c.direction == "send" and (c.layer != "L3" or c.protocol == "raw")]
    assert len(wanted) == 9  # the four payload classes, raw in both families, other, local, malformed
    for name in wanted:
        assert seen[name] > 0, name
    assert max(len(f) for f in frames) <= MAX_TEST_FRAME
    assert hostile(7, 50) == hostile(7, 50)  # seeded: a failure can be replayed


@pytest.mark.parametrize("raw", [b"veth0", b"\xff\xfe", b"e\x1b[31mx", "café".encode(), b"a\\b", b"tab\tx", b"\\xff"])
def test_names_are_shown_printable_and_read_back_exactly(raw: bytes) -> None:
    from tcflow.model.names import from_kernel, parse, printable, shown

    name = from_kernel(raw)
    text = shown(name)
    assert text.isprintable() and text.encode("ascii", "ignore") or text == "café"
    assert "\x1b" not in text and not any("\udc80" <= c <= "\udcff" for c in text)
    assert os.fsencode(parse(text)) == raw  # what is shown can be typed back
    assert printable(f"error: {text}") == f"error: {text}"  # already safe: left alone
