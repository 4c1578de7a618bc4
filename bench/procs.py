"""A tcflow process's memory, its HTTP front's included: `serve` is two
processes (the agent and, without privilege, its HTTP front; docs/
architecture.md), and what serve costs is both."""

from __future__ import annotations

import os


def _vmrss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(ln.split()[1]) for ln in f if ln.startswith("VmRSS:"))


def children(pid: int) -> list[int]:
    out: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(c) for c in f.read().split()]
        except OSError:
            continue
    return out


def rss_mib(pid: int) -> float:
    """VmRSS of ``pid`` and of its children (serve's front), MiB."""
    total = _vmrss_kib(pid)
    for c in children(pid):
        try:
            total += _vmrss_kib(c)
        except (OSError, StopIteration):
            continue
    return total / 1024


def own_rss_mib(pid: int) -> float:
    return _vmrss_kib(pid) / 1024
