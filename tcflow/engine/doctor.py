"""`tcflow doctor`: check what tcflow needs, and say how to fix what fails.

Each check is a function returning a Check. Nothing here touches a real
interface: clsact and XDP are tried on the loopback of a throwaway network
namespace that exists only for the thread that made it.
"""

from __future__ import annotations

import ctypes
import os
import platform
import time
from dataclasses import dataclass
from typing import Callable, Optional

from tcflow.bpf import build, kheaders, libbpf
from tcflow.bpf.abi import BPF_MAP_TYPE_ARRAY
from tcflow.bpf.loader import PROG_XDP, PROGRAMS, Datapath
from tcflow.engine import privileges
from tcflow.host.pins import BPFFS, is_bpffs
from tcflow.model.errors import TcflowError
from tcflow.system.netns import cookie_of_current, run_in_scratch
from tcflow.system.safepath import trusted_dir


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True


def check_modes() -> list[Check]:
    """One check a mode: what this process lacks for it, each capability
    named with what it is for (engine/privileges.py); after the first, only
    what a mode needs beyond it."""
    caps = privileges.effective()
    user = caps == 0 and os.geteuid() != 0
    out: list[Check] = []
    base: set[str] = set()
    for name, mode, required in MODES:
        lacking = privileges.missing(privileges.needs(mode), caps)
        granted = ", ".join(privileges.grant(privileges.needs(mode)))
        more = [n for n in lacking if n.cap not in base]
        if not lacking:
            out.append(Check(name, True, granted, required=required))
        else:
            text = "; ".join(f"{n.cap} ({n.why})" for n in more)
            detail = ("missing " + text if len(more) == len(lacking) else
                      "missing what the first check names" + (f", and {text}" if text else ""))
            fix = "run tcflow with sudo" if user else f"run tcflow as root, or grant {granted} (docs/privileges.md)"
            out.append(Check(name, False, detail, fix, required=required))
        if not base:
            base = {n.cap for n in lacking}
    return out


# (check name, mode, whether doctor fails without it)
MODES = (
    ("root and capabilities (attach, top, serve in its own namespace)", privileges.Mode(load=True), True),
    ("capabilities for other namespaces (--netns, NETNS/IFACE)", privileges.Mode(load=True, netns=True), False),
    ("capabilities for containers (--containers, --pid)", privileges.Mode(load=True, netns=True, proc=True),
     False),
    ("serve's HTTP front without privilege", privileges.Mode(load=True, front=True), False),
)


def check_bpf_syscall() -> Check:
    try:
        lb = libbpf.lib()
    except Exception as e:
        return Check("bpf() system call", False, str(e), "apt-get install libbpf1")
    lb.bpf_map_create.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32, ctypes.c_uint32,
                                  ctypes.c_uint32, ctypes.c_void_p]
    fd = lb.bpf_map_create(BPF_MAP_TYPE_ARRAY, b"tcflow_doctor", 4, 8, 1, None)
    if fd < 0:
        err = ctypes.get_errno()
        fix = ("run tcflow with sudo" if err == 1 else
               "the kernel needs CONFIG_BPF_SYSCALL; check kernel.unprivileged_bpf_disabled only if not root")
        return Check("bpf() system call", False, f"creating a map failed: {os.strerror(err)}", fix)
    os.close(fd)
    jit = _read("/proc/sys/net/core/bpf_jit_enable")
    return Check("bpf() system call", True, f"maps can be created; JIT {'on' if jit == '1' else 'off (' + jit + ')'}")


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return "?"


def check_bcc() -> Check:
    try:
        import bcc  # noqa: F401
    except ImportError as e:
        return Check("bcc Python bindings", False, f"import bcc failed: {e}",
                     "apt-get install python3-bpfcc, and run tcflow from a Python that sees Debian's "
                     "dist-packages (`make setup` builds .venv that way)")
    version = getattr(bcc, "__version__", "?")
    return Check("bcc Python bindings", True, f"bcc {version} from {os.path.dirname(bcc.__file__)}")


def check_headers() -> Check:
    try:
        h = kheaders.locate()
    except TcflowError as e:
        return Check("kernel headers", False, e.message, e.hint or "")
    text = {"env": "BCC_KERNEL_SOURCE", "modules": "headers of the running kernel",
            "kheaders": "the kernel's own /sys/kernel/kheaders.tar.xz",
            "fallback": "fallback"}[h.source]
    detail = f"{text}: {h.path}" + (f" ({h.note})" if h.note else "")
    return Check("kernel headers", True, detail)


def check_cache() -> Check:
    """What the next start will find: a cached image for this kernel, bcc and source, or none."""
    name = "compiled-program cache"
    try:
        key = build.cache_key(kheaders.locate())
        if not trusted_dir(build.cache_dir(), TcflowError):
            return Check(name, True, f"empty ({build.cache_dir()}): the first start compiles", required=False)
    except TcflowError as e:
        return Check(name, False, e.message, e.hint or "", required=False)
    path = os.path.join(build.cache_dir(), key + ".json")
    try:
        others = [n for n in os.listdir(build.cache_dir()) if n.endswith(".json") and n != key + ".json"]
    except OSError as e:  # root-only, as it should be: not readable by another user
        return Check(name, False, f"cannot read {build.cache_dir()}: {e.strerror}", "run tcflow doctor with sudo",
                     required=False)
    stale = f"; {len(others)} entr{'y' if len(others) == 1 else 'ies'} of other kernels or versions" if others else ""
    if not os.path.exists(path):
        return Check(name, True, f"no entry for this kernel, bcc and source in {build.cache_dir()}: the next "
                     f"start compiles{stale}", required=False)
    st = os.stat(path)
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(st.st_mtime))
    return Check(name, True, f"{path} ({st.st_size / 1000:.0f} kB, written {when}): starts load it without "
                 f"bcc{stale}", required=False)


def check_compile() -> tuple[Check, Optional[Datapath]]:
    """Compile afresh, and load all three programs (the verifier runs): the Datapath for check_xdp."""
    name = "compile and verify tcflow's programs"
    try:
        dp = Datapath(use_cache=False)
        cookie = cookie_of_current()
        for prog in PROGRAMS:
            dp.prog(prog, cookie)
    except TcflowError as e:
        return Check(name, False, e.message, e.hint or "run with --debug"), None
    return Check(name, True, "bcc compiled xdp_tc.c (in a child process); the verifier took all three; "
                 "cached for later starts"), dp


def _in_scratch_netns(fn: Callable[[], Optional[str]]) -> Optional[str]:
    """fn's answer, run inside a throwaway network namespace; errors become text."""
    try:
        return run_in_scratch(fn)
    except Exception as e:
        return f"{type(e).__name__}: {e}"


def check_clsact() -> Check:
    def probe() -> Optional[str]:
        from pyroute2 import IPRoute

        with IPRoute() as ipr:
            lo = ipr.link_lookup(ifname="lo")[0]
            ipr.tc("add", "clsact", lo)
            ipr.tc("del", "clsact", lo)
        return None

    err = _in_scratch_netns(probe)
    if err:
        return Check("clsact qdisc", False, err, "the kernel needs CONFIG_NET_SCH_INGRESS and CONFIG_NET_CLS_BPF")
    return Check("clsact qdisc", True, "added and removed on the loopback of a scratch namespace")


def check_xdp(dp: Datapath) -> Check:
    def probe() -> Optional[str]:
        from pyroute2 import IPRoute

        fd = dp.prog(PROG_XDP, cookie_of_current())
        with IPRoute() as ipr:
            lo = ipr.link_lookup(ifname="lo")[0]
            ipr.link("set", index=lo, xdp={"attrs": [("IFLA_XDP_FD", fd), ("IFLA_XDP_FLAGS", 1 << 1)]})
            ipr.link("set", index=lo, xdp={"attrs": [("IFLA_XDP_FD", -1), ("IFLA_XDP_FLAGS", 1 << 1)]})
        return None

    err = _in_scratch_netns(probe)
    if err:
        return Check("XDP", False, err, "count recv with --ingress tc; XDP needs Linux 4.8 or newer")
    return Check("XDP", True, "generic XDP attached and removed on a scratch loopback; native depends on the driver")


def check_bpffs() -> Check:
    if is_bpffs(BPFFS):
        return Check("bpffs (for --pin)", True, f"mounted at {BPFFS}", required=False)
    return Check("bpffs (for --pin)", False, f"not mounted at {BPFFS}; --pin would mount it",
                 f"mount -t bpf bpf {BPFFS}", required=False)


def check_btf() -> Check:
    ok = os.path.exists("/sys/kernel/btf/vmlinux")
    state = "present" if ok else "absent; tcflow does not need it"
    return Check("kernel BTF", ok, f"/sys/kernel/btf/vmlinux {state}",
                 required=False)


def run_checks() -> list[Check]:
    modes = check_modes()
    bcc, headers = check_bcc(), check_headers()
    checks = [*modes, check_bpf_syscall(), bcc, headers, check_btf(), check_bpffs(), check_cache()]
    dp = None
    if modes[0].ok and bcc.ok and headers.ok:
        compiled, dp = check_compile()
        checks.append(compiled)
    try:
        if modes[0].ok:
            checks.append(check_clsact())
            if dp is not None:
                checks.append(check_xdp(dp))
    finally:
        if dp is not None:
            dp.close()
    return checks


def report(checks: list[Check]) -> tuple[str, bool]:
    lines = [f"tcflow doctor: kernel {platform.release()}, {os.cpu_count()} CPUs"]
    for c in checks:
        mark = "ok  " if c.ok else ("FAIL" if c.required else "warn")
        lines.append(f"  [{mark}] {c.name}: {c.detail}")
        if not c.ok and c.fix:
            lines.append(f"         fix: {c.fix}")
    ok = all(c.ok for c in checks if c.required)
    skipped = not (checks[0].ok and any(c.name.startswith("compile") for c in checks))
    if skipped and ok:
        ok = False
    lines.append("all required checks passed" if ok else "some checks failed or could not run: see the fixes above")
    return "\n".join(lines), ok
