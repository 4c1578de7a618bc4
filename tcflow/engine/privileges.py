"""The capabilities each mode of tcflow needs, and the check that names what
is missing before anything is attached.

The table is measured, not guessed: tests/netns/test_capabilities.py runs
each mode as root with exactly these capabilities in its bounding set (as a
systemd unit's CapabilityBoundingSet or a pod's `drop: [ALL]` plus `add`
do), sees it count, then removes each capability in turn with this check
switched off and sees the kernel refuse the mode. docs/privileges.md has the
table for people; deploy/tcflow.service and deploy/daemonset.yaml grant what
the command each runs needs, and tests/unit/test_deploy.py holds them to it.

CAP_SYS_ADMIN grants everything CAP_BPF and CAP_PERFMON do (the kernel's
bpf_capable() and perfmon_capable()), so a mode that needs CAP_SYS_ADMIN
anyway needs neither.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from tcflow.model.errors import PermissionError_

NUMBERS = {"CAP_SETGID": 6, "CAP_SETUID": 7, "CAP_SETPCAP": 8, "CAP_NET_ADMIN": 12, "CAP_SYS_PTRACE": 19,
           "CAP_SYS_ADMIN": 21, "CAP_PERFMON": 38, "CAP_BPF": 39}
SUPERSET = "CAP_SYS_ADMIN"
COVERED = ("CAP_BPF", "CAP_PERFMON")  # by CAP_SYS_ADMIN
UNSET = "TCFLOW_UNCHECKED_CAPS"  # measurement only: skip this check and let the kernel say no


@dataclass(frozen=True)
class Need:
    cap: str
    why: str


BPF = Need("CAP_BPF", "loading the programs, making and reading the maps and pins")
PERFMON = Need("CAP_PERFMON", "the verifier accepts the header parser's pointer arithmetic only with it")
NET_ADMIN = Need("CAP_NET_ADMIN", "clsact qdiscs, tc filters and XDP")
SETNS = Need("CAP_SYS_ADMIN", "entering another network namespace with setns")
PTRACE = Need("CAP_SYS_PTRACE", "opening /proc/PID/ns/net of a process with other capabilities, such as a container's")
MOUNT = Need("CAP_SYS_ADMIN", "mounting bpffs at /sys/fs/bpf, which is not mounted")
FRONT = (Need("CAP_SETUID", "serve's HTTP front becomes user nobody"),
         Need("CAP_SETGID", "serve's HTTP front drops root's groups"),
         Need("CAP_SETPCAP", "serve's HTTP front empties its bounding set"))


@dataclass(frozen=True)
class Mode:
    """What a command line does. ``load``: programs are loaded and attached
    (attach, top, serve); ``unhook``: filters are removed (detach);
    ``netns``: another network namespace is entered; ``proc``: a process's
    namespace is opened (``--pid``, ``pid:N/``, ``--containers``);
    ``mount``: bpffs has to be mounted; ``front``: serve's HTTP front."""

    load: bool = False
    unhook: bool = False
    netns: bool = False
    proc: bool = False
    mount: bool = False
    front: bool = False


def bpf_gated() -> bool:
    """Whether every bpf() call needs CAP_BPF: before Linux 6.5,
    kernel.unprivileged_bpf_disabled refused them all (reading a pinned map
    too); since, it gates only making maps and loading programs."""
    try:
        with open("/proc/sys/kernel/unprivileged_bpf_disabled") as f:
            disabled = f.read().strip() != "0"
    except OSError:
        disabled = True
    release = os.uname().release.split("-")[0].split(".")
    try:
        major, minor = int(release[0]), int(release[1])
    except (IndexError, ValueError):
        return disabled
    return disabled and (major, minor) < (6, 5)


def needs(mode: Mode) -> list[Need]:
    out = [BPF] if mode.load or bpf_gated() else []
    if mode.load:
        out.append(PERFMON)
    if mode.load or mode.unhook:
        out.append(NET_ADMIN)
    if mode.netns:
        out.append(SETNS)
    if mode.proc:
        out.append(PTRACE)
    if mode.mount:
        out.append(MOUNT)
    if mode.front:
        out.extend(FRONT)
    return out


def stats_enabled() -> bool:
    """kernel.bpf_stats_enabled: BPF run-time statistics kept for every
    program, without tcflow's BPF_ENABLE_STATS (which needs CAP_SYS_ADMIN)."""
    try:
        with open("/proc/sys/kernel/bpf_stats_enabled") as f:
            return f.read().strip() == "1"
    except OSError:
        return False


def grant(needs_: list[Need]) -> list[str]:
    """The least set of capabilities that meets these needs, in a stable order."""
    caps = {n.cap for n in needs_}
    if SUPERSET in caps:
        caps -= set(COVERED)
    return sorted(caps, key=lambda c: NUMBERS[c])


def effective() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0


def has(cap: str, caps: int) -> bool:
    if caps & (1 << NUMBERS[cap]):
        return True
    return cap in COVERED and bool(caps & (1 << NUMBERS[SUPERSET]))


def missing(needs_: list[Need], caps: int | None = None) -> list[Need]:
    """The needs this process (or the set ``caps``) does not meet, each capability once."""
    caps = effective() if caps is None else caps
    seen: set[str] = set()
    out = []
    for n in needs_:
        if n.cap not in seen and not has(n.cap, caps):
            seen.add(n.cap)
            out.append(n)
    return out


def require(mode: Mode) -> None:
    """A one-line error naming each missing capability and what it is for."""
    if os.environ.get(UNSET) == "1":
        return
    caps = effective()
    if caps == 0 and os.geteuid() != 0:  # a user: tcflow's state is root's, whatever the mode
        raise PermissionError_("tcflow needs root", hint="run it with sudo")
    lacking = missing(needs(mode), caps)
    if not lacking:
        return
    raise PermissionError_("tcflow lacks " + "; ".join(f"{n.cap} ({n.why})" for n in lacking),
                           hint=f"grant {'it' if len(lacking) == 1 else 'them'}, or run tcflow as root with every "
                                "capability (docs/privileges.md lists what each mode needs)")
