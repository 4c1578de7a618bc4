"""Compile the datapath once, in a child process, and cache what it gives.

bcc compiles with clang/LLVM, which stays mapped in any process that imports
it (over 100 MiB of resident memory for the life of an agent that runs for
months). So tcflow never imports bcc itself: a cold start runs
``python -m tcflow.bpf.build`` in a child, which compiles ``tcflow/bpf/xdp_tc.c`` and
prints an Image, the programs' instructions with their map references
recorded by map name. The Image is cached, keyed by everything that changes
the instructions: the source and its headers, the cflags, the kernel release and version,
bcc's version (and its library file), and the kernel headers used. Later
starts take it from the cache, and tcflow/bpf/loader.py loads it with bpf(2).

The cache is root-only, like the header cache beside it: a directory chain
no other user could have written (safepath), files 0600 owned by root, read
without following symlinks. An entry that is unreadable, of another format,
or whose digest does not match is compiled again; one that the verifier
refuses is too (loader.py) - never trusted.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import os
import platform
import re
import stat
import struct
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from typing import Optional

from tcflow.bpf import abi, kheaders, libbpf
from tcflow.model import classes
from tcflow.model.errors import CompileError, DependencyError, PermissionError_, TcflowError
from tcflow.system.safepath import make_dirs, trusted_dir

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, "xdp_tc.c")
HEADERS = tuple(os.path.join(HERE, h) for h in ("abi.h", "parse.h", "flows.h"))  # what SOURCE includes
_LOCAL_INCLUDE = re.compile(r'^#include "([a-z]+\.h)"$', re.M)
FORMAT = 1
PROG_XDP = "tcflow_xdp"
PROG_TC_INGRESS = "tcflow_tc_ingress"
PROG_TC_EGRESS = "tcflow_tc_egress"
PROGRAMS = (PROG_XDP, PROG_TC_INGRESS, PROG_TC_EGRESS)
MAPS = ("ifaces", "by_ifindex", "counters")  # the maps the programs reference
FLOW_MAPS = ("flows", "flow_frags", "flow_overflow", "flow_cache")  # and, built with flows, these
BPF_PROG_TYPE_SCHED_CLS, BPF_PROG_TYPE_XDP = 3, 6
PROG_TYPES = {PROG_XDP: BPF_PROG_TYPE_XDP, PROG_TC_INGRESS: BPF_PROG_TYPE_SCHED_CLS,
              PROG_TC_EGRESS: BPF_PROG_TYPE_SCHED_CLS}
_LD_IMM64, _PSEUDO_MAP_FD = 0x18, 1
COMPILE_TIMEOUT_S = 120


def cache_dir() -> str:
    return os.path.join(kheaders.CACHE_DIR, "programs")


@dataclass(frozen=True)
class Image:
    """Compiled programs: {name: instructions} with every map reference's
    immediate zeroed and recorded in ``maps`` as (byte offset, map name)."""

    key: str
    insns: dict[str, bytes]
    maps: dict[str, tuple[tuple[int, str], ...]]

    def link(self, name: str, fds: dict[str, int]) -> bytes:
        """The instructions of ``name`` with each map's fd written in."""
        buf = bytearray(self.insns[name])
        for off, mapname in self.maps[name]:
            struct.pack_into("<i", buf, off + 4, fds[mapname])
        return bytes(buf)

    def to_json(self) -> str:
        body = {"format": FORMAT, "key": self.key,
                "programs": {n: {"insns": base64.b64encode(self.insns[n]).decode(),
                                 "maps": [list(m) for m in self.maps[n]]} for n in sorted(self.insns)}}
        text = json.dumps(body, sort_keys=True)
        return json.dumps({"digest": hashlib.sha256(text.encode()).hexdigest(), "body": text})

    @staticmethod
    def from_json(text: str, key: str) -> "Image":
        """Parse and check an Image; ValueError if it is not a whole, matching one."""
        outer = json.loads(text)
        body_text = outer["body"]
        if hashlib.sha256(body_text.encode()).hexdigest() != outer["digest"]:
            raise ValueError("digest mismatch")
        body = json.loads(body_text)
        if body["format"] != FORMAT or body["key"] != key or set(body["programs"]) != set(PROGRAMS):
            raise ValueError("another format, key or program set")
        insns, maps = {}, {}
        for n, p in body["programs"].items():
            raw = base64.b64decode(p["insns"], validate=True)
            refs = tuple((int(off), str(m)) for off, m in p["maps"])
            if len(raw) % 8 or not raw or any(m not in MAPS + FLOW_MAPS or off % 8 or off + 16 > len(raw) or
                                              raw[off] != _LD_IMM64 for off, m in refs):
                raise ValueError("malformed program")
            insns[n], maps[n] = raw, refs
        return Image(key, insns, maps)


def bcc_identity() -> str:
    """bcc's version and its library file, read without importing bcc."""
    spec = importlib.util.find_spec("bcc")
    if spec is None or not spec.submodule_search_locations:
        raise DependencyError("cannot find bcc", hint="apt-get install python3-bpfcc, and run tcflow from a "
                              "Python that sees Debian's dist-packages (make setup builds one)")
    pkg = list(spec.submodule_search_locations)[0]
    try:
        with open(os.path.join(pkg, "version.py")) as f:
            version = f.read().strip()
    except OSError:
        version = "?"
    libs = []
    for d in ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib", "/usr/lib64"):
        p = os.path.join(d, "libbcc.so.0")
        if os.path.exists(p):
            st = os.stat(p)
            libs.append(f"{os.path.realpath(p)}:{st.st_size}:{st.st_mtime_ns}")
            break
    return f"{pkg}|{version}|{'|'.join(libs)}"


def source_text() -> str:
    """SOURCE with the project's own headers (``#include "x.h"``) written in
    place: bcc rewrites map calls (``flows.lookup(...)``) only in the file it
    is given, and a call it leaves would be an indirect call the kernel
    refuses. Each header is written in once, as its include guard would."""
    done: set[str] = set()

    def expand(m: "re.Match[str]") -> str:
        name = m.group(1)
        path = os.path.join(HERE, name)
        if path not in HEADERS:
            raise CompileError(f"{os.path.basename(SOURCE)} includes {name}, which is not one of its headers")
        if name in done:
            return ""
        done.add(name)
        with open(path) as f:
            return _LOCAL_INCLUDE.sub(expand, f.read())

    with open(SOURCE) as f:
        return _LOCAL_INCLUDE.sub(expand, f.read())


def cflags(flows: bool = False) -> list[str]:
    """The class cells, and with ``flows`` the per-five-tuple counting (and
    its cache's size, which follows the CPU count)."""
    if not flows:
        return classes.cflags()
    bits = abi.flow_cache_set_bits(libbpf.num_possible_cpus())
    return classes.cflags() + ["-DTCFLOW_FLOWS", f"-DFLOW_CACHE_SET_BITS={bits}"]


def cache_key(headers: kheaders.Headers, flows: bool = False) -> str:
    """What changes the instructions, hashed: a new value of any is a new entry."""
    h = hashlib.sha256()
    for path in (SOURCE, *HEADERS):
        with open(path, "rb") as f:
            h.update(f.read())
    for part in (" ".join(cflags(flows)), platform.release(), platform.version(), bcc_identity(),
                 headers.source, headers.path, sys.implementation.cache_tag or ""):
        h.update(b"\0" + part.encode())
    return h.hexdigest()


def _read_cached(path: str, key: str) -> Optional[Image]:
    """The cached Image, or None: absent, not root's alone, torn or stale."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid not in (0, os.geteuid()) or st.st_mode & 0o077 \
                or st.st_size > 4 << 20:
            return None
        with os.fdopen(fd, "r", closefd=False) as f:
            text = f.read()
    finally:
        os.close(fd)
    try:
        return Image.from_json(text, key)
    except (ValueError, KeyError, TypeError):
        return None


def _write_cached(path: str, image: Image) -> None:
    """Atomically, 0600: a reader sees the old entry or the whole new one."""
    d = os.path.dirname(path)
    make_dirs(d, 0o700, CompileError)
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-")  # 0600
    try:
        with os.fdopen(fd, "w") as f:
            f.write(image.to_json())
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def discard(key: str) -> None:
    """Drop one entry (the verifier refused it)."""
    try:
        os.unlink(os.path.join(cache_dir(), key + ".json"))
    except OSError:
        pass


def image(headers: Optional[kheaders.Headers] = None, use_cache: bool = True,
          flows: bool = False) -> tuple[Image, str]:
    """The Image for this machine and how it came: "cache" or "compiled"."""
    headers = headers or kheaders.locate()
    key = cache_key(headers, flows)
    path = os.path.join(cache_dir(), key + ".json")
    cache_ok = False
    try:
        cache_ok = trusted_dir(cache_dir(), CompileError)
    except CompileError:
        cache_ok = False  # not safe to read or write: compile every time
    if use_cache and cache_ok:
        cached = _read_cached(path, key)
        if cached is not None:
            return cached, "cache"
    img = compile_in_child(key, headers, flows)
    try:
        _write_cached(path, img)
    except (OSError, TcflowError):
        pass  # a read-only or unsafe cache only costs the next start a compile
    return img, "compiled"


def compile_in_child(key: str, headers: kheaders.Headers, flows: bool = False) -> Image:
    """Run bcc in a child process; this process never maps LLVM."""
    env = dict(os.environ)
    pkg_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = pkg_parent + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    if headers.source == "fallback":
        env["BCC_KERNEL_SOURCE"] = headers.path
    try:
        r = subprocess.run([sys.executable, "-m", "tcflow.bpf.build", key, *(["--flows"] if flows else [])], env=env,
                           capture_output=True, timeout=COMPILE_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise CompileError(f"compiling {os.path.basename(SOURCE)} took over {COMPILE_TIMEOUT_S} s",
                           hint="run `tcflow doctor`") from None
    out = r.stdout.decode(errors="replace")
    if r.returncode != 0:
        try:
            err = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            lines = [ln for ln in r.stderr.decode(errors="replace").splitlines() if ln.strip()]
            raise CompileError(f"bcc could not compile {os.path.basename(SOURCE)}: "
                               f"{lines[-1] if lines else 'exit ' + str(r.returncode)}",
                               hint="run `tcflow doctor`") from None
        kind = {"DependencyError": DependencyError, "PermissionError_": PermissionError_}.get(err["kind"],
                                                                                             CompileError)
        raise kind(err["message"], hint=err.get("hint"))
    try:
        return Image.from_json(out, key)
    except (ValueError, KeyError, TypeError) as e:
        raise CompileError(f"the compiler process gave no usable program image ({e})",
                           hint="run `tcflow doctor`") from None


# -- the child ----------------------------------------------------------------

def _compile(key: str, flows: bool = False) -> Image:
    try:
        from bcc import BPF
    except ImportError:
        raise DependencyError(
            "cannot import bcc", hint="apt-get install python3-bpfcc, and run tcflow from a "
            "Python that sees Debian's dist-packages (make setup builds one)"
        ) from None
    with tempfile.TemporaryFile() as cap:  # clang's diagnostics, for the error
        saved = os.dup(2)
        os.dup2(cap.fileno(), 2)
        try:
            bpf = BPF(text=source_text().encode(), cflags=cflags(flows))
        except Exception as e:
            os.dup2(saved, 2)
            cap.seek(0)
            lines = [ln for ln in cap.read().decode(errors="replace").splitlines() if ln.strip()]
            if os.geteuid() != 0:
                raise PermissionError_("loading BPF programs needs root", hint="run tcflow with sudo") from None
            raise CompileError(f"bcc could not compile {os.path.basename(SOURCE)}: "
                               f"{lines[-1] if lines else e}", hint="run `tcflow doctor`") from None
        finally:
            os.dup2(saved, 2)
            os.close(saved)
    fd_to_map = {int(bpf[m.encode()].get_fd()): m for m in MAPS + (FLOW_MAPS if flows else ())}
    insns, maps = {}, {}
    for name in PROGRAMS:
        buf = bytearray(bpf.dump_func(name.encode()))
        refs = []
        for off in range(0, len(buf) - 15, 8):
            if buf[off] == _LD_IMM64 and (buf[off + 1] >> 4) == _PSEUDO_MAP_FD:
                fd = struct.unpack_from("<i", buf, off + 4)[0]
                if fd not in fd_to_map:
                    raise CompileError(f"{name} references a map tcflow does not know (fd {fd})")
                refs.append((off, fd_to_map[fd]))
                struct.pack_into("<i", buf, off + 4, 0)
        insns[name], maps[name] = bytes(buf), tuple(refs)
    bpf.cleanup()
    return Image(key, insns, maps)


def _main(argv: list[str]) -> int:
    try:
        print(_compile(argv[0], "--flows" in argv[1:]).to_json())
        return 0
    except TcflowError as e:
        print(json.dumps({"kind": type(e).__name__, "message": e.message, "hint": e.hint}))
        return 3


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
