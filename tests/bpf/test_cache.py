"""The compiled-program cache: what a warm start loads is what a compile gives,
and a bad entry is compiled again, never trusted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any, Iterator

import pytest

from tcflow.bpf import build, kheaders, libbpf, loader
from tcflow.engine.slots import SlotTable
from tests.support.cases import cases, hostile
from tests.support.harness import PROGRAMS, Harness


@pytest.fixture
def cache(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A private cache directory (the header fallback tree is rebuilt in it: symlinks, quick)."""
    d = tmp_path / "cache"
    d.mkdir(mode=0o700)
    monkeypatch.setattr(kheaders, "CACHE_DIR", str(d))
    yield build.cache_dir()


def _entry(cache: str) -> str:
    names = [n for n in os.listdir(cache) if n.endswith(".json")]
    assert len(names) == 1, names
    return os.path.join(cache, names[0])


def test_cached_programs_are_byte_identical_to_a_fresh_compile_and_count_the_same(cache: str) -> None:
    with loader.Datapath(use_cache=False) as fresh:
        assert fresh.origin == "compiled"
        with loader.Datapath() as warm:
            assert warm.origin == "cache"
            assert warm.image.insns == fresh.image.insns and warm.image.maps == fresh.image.maps
            fh, wh = Harness(fresh, SlotTable(fresh)), Harness(warm, SlotTable(warm))
            try:
                for name, _ in PROGRAMS.values():
                    # the kernel's tag hashes the instructions as loaded, map fds masked
                    assert bytes(libbpf.prog_info(fresh.prog(name, fh.cookie)).tag) == \
                        bytes(libbpf.prog_info(warm.prog(name, wh.cookie)).tag), name
                frames = [c.frame for c in cases()] + hostile(7, 300)
                for program in PROGRAMS:
                    for frame in frames:
                        if program != "xdp" and len(frame) < 14:
                            continue
                        try:
                            assert fh.run(program, frame) == wh.run(program, frame), (program, frame.hex())
                        except Exception as e:  # the kernel refuses a frame for both alike
                            if type(e).__name__ != "Refused":
                                raise
            finally:
                fh.close()
                wh.close()
    st = os.stat(_entry(cache))
    assert st.st_uid == 0 and st.st_mode & 0o777 == 0o600
    assert os.stat(cache).st_mode & 0o777 == 0o700


def test_an_entry_the_verifier_refuses_is_compiled_again(cache: str) -> None:
    with loader.Datapath(use_cache=False):
        pass
    path = _entry(cache)
    img = build.Image.from_json(open(path).read(), os.path.basename(path)[:-5])
    bad = {n: b"\x05\x00\xff\x7f\x00\x00\x00\x00" + i[8:] for n, i in img.insns.items()}  # jump far out: refused
    with open(path, "w") as f:
        f.write(build.Image(img.key, bad, img.maps).to_json())  # a whole, well-formed entry
    with loader.Datapath() as dp:
        assert dp.origin == "cache"
        dp.prog(loader.PROG_XDP, 1)  # refused, compiled afresh, loaded
        assert dp.origin == "compiled"
        assert dp.image.insns == img.insns
    assert build.Image.from_json(open(path).read(), img.key).insns == img.insns


@pytest.mark.parametrize("damage", ["torn", "digest", "world_writable", "symlink"])
def test_an_entry_that_is_torn_tampered_or_not_roots_alone_is_not_read(cache: str, damage: str) -> None:
    with loader.Datapath(use_cache=False):
        pass
    path = _entry(cache)
    text = open(path).read()
    if damage == "torn":
        open(path, "w").write(text[: len(text) // 2])
    elif damage == "digest":
        doc = json.loads(text)
        doc["body"] = doc["body"].replace('"maps": [[', '"maps": [[8, "ifaces"], [', 1)
        open(path, "w").write(json.dumps(doc))
    elif damage == "world_writable":
        os.chmod(path, 0o666)
    else:
        os.rename(path, path + ".real")
        os.symlink(path + ".real", path)
    with loader.Datapath() as dp:
        assert dp.origin == "compiled"


def test_an_agent_never_maps_llvm(cache: str, silent_pair: Any, pin_env: dict[str, str]) -> None:
    """A warm start loads from the cache: bcc (and LLVM with it) is never in the process."""
    with loader.Datapath(use_cache=False):
        pass  # the cache is warm
    pin_env = dict(pin_env, TCFLOW_CACHE_DIR=os.path.dirname(cache))
    code = ("import sys, tcflow.cli.main as c; rc = c.main(sys.argv[1:]); "
            "maps = open('/proc/self/maps').read(); "
            "print('LLVM' if ('libbcc' in maps or 'LLVM' in maps or 'bcc' in sys.modules) else 'clean'); "
            "sys.exit(rc)")
    r = subprocess.run([sys.executable, "-c", code, "attach", "--netns", silent_pair.ns_a, silent_pair.dev_a,
                        "--json", "--count", "1", "--interval", "0.1"], env=pin_env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "clean"
