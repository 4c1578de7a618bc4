"""Throwaway network namespaces joined by veths: for the demo, the tests and
the benchmarks alike.

Only docs/SPEC.md's test ranges (198.18.0.0/15, 2001:db8::/32), no default
route, nothing that reaches outside. Deleting a namespace deletes its veth
end (and so the peer) with every qdisc, filter and XDP program on it; a
Sandbox deletes what it made, last first, even when something failed.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Sequence


def run(*argv: str, check: bool = True) -> str:
    """Run a command; its output as str, bytes that are not UTF-8 kept as
    surrogate escapes (namespace names can be any bytes)."""
    r = subprocess.run(argv, capture_output=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {os.fsdecode(r.stderr).strip()}")
    return os.fsdecode(r.stdout)


@dataclass
class VethPair:
    """Two namespaces joined by a veth; ``a`` is where tcflow attaches."""

    ns_a: str
    ns_b: str
    dev_a: str = "tcfa"
    dev_b: str = "tcfb"
    ip4_a: str = "198.18.0.1"
    ip4_b: str = "198.18.0.2"
    ip6_a: str = "2001:db8::1"
    ip6_b: str = "2001:db8::2"

    def exec_a(self, *argv: str) -> str:
        return run("ip", "netns", "exec", self.ns_a, *argv)

    def exec_b(self, *argv: str) -> str:
        return run("ip", "netns", "exec", self.ns_b, *argv)


class Sandbox:
    """Namespaces named ``PREFIX`` + a random tag, and everything in them."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self._undo: list[Callable[[], Any]] = []

    def netns(self) -> str:
        """A new namespace with lo up."""
        name = f"{self.prefix}{uuid.uuid4().hex[:8]}"
        run("ip", "netns", "add", name)
        self._undo.append(lambda: run("ip", "netns", "del", name, check=False))
        run("ip", "-n", name, "link", "set", "lo", "up")
        return name

    def pair(self, addresses: bool = True, dev_a: str = "tcfa", dev_b: str = "tcfb", quiet: Sequence[str] = (),
             ip4: tuple[str, str] = ("198.18.0.1", "198.18.0.2"),
             ip6: tuple[str, str] = ("2001:db8::1", "2001:db8::2")) -> VethPair:
        """Two new namespaces and a veth between them. ``addresses``: IPv4 and
        IPv6 on both ends (nodad: usable at once); else a silent link, IPv6
        off, so only frames a test injects cross it. ``quiet``: sysctls
        (``key=value``) set in both namespaces before the veth exists."""
        p = VethPair(self.netns(), self.netns(), dev_a, dev_b, ip4[0], ip4[1], ip6[0], ip6[1])
        for ns in (p.ns_a, p.ns_b) if quiet else ():
            run("ip", "netns", "exec", ns, "sysctl", "-qw", *quiet)
        run("ip", "link", "add", p.dev_a, "netns", p.ns_a, "type", "veth", "peer", "name", p.dev_b, "netns", p.ns_b)
        for ns, dev, a4, a6 in ((p.ns_a, p.dev_a, p.ip4_a, p.ip6_a), (p.ns_b, p.dev_b, p.ip4_b, p.ip6_b)):
            if addresses:
                run("ip", "-n", ns, "addr", "add", f"{a4}/24", "dev", dev)
                run("ip", "-n", ns, "addr", "add", f"{a6}/64", "dev", dev, "nodad")
            else:
                run("ip", "netns", "exec", ns, "sysctl", "-qw", f"net.ipv6.conf.{dev}.disable_ipv6=1")
            run("ip", "-n", ns, "link", "set", dev, "up")
        return p

    def veths(self, ns: str, n: int) -> list[str]:
        """``n`` veth pairs inside ``ns`` (both ends there), with one `ip -batch`;
        the ``a`` ends' names."""
        with tempfile.NamedTemporaryFile("w", suffix=".batch") as f:
            for i in range(n):
                f.write(f"link add s{i}a type veth peer name s{i}b\n")
            f.flush()
            run("ip", "-n", ns, "-batch", f.name)
        return [f"s{i}a" for i in range(n)]

    def close(self) -> None:
        """Undo everything, last first; one failure does not stop the rest."""
        while self._undo:
            try:
                self._undo.pop()()
            except Exception:
                pass

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def leftovers(prefix: str) -> list[str]:
    """Namespaces named with ``prefix`` that still exist."""
    names = [ln.split()[0] for ln in run("ip", "netns", "list", check=False).splitlines() if ln.strip()]
    return [n for n in names if n.startswith(prefix)]


def remove_leftovers(prefix: str) -> None:
    for name in leftovers(prefix):
        run("ip", "netns", "del", name, check=False)
