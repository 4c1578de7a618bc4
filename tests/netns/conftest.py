"""Network-namespace fixtures: unique names, a cleanup registry, veth pairs.

Test hosts use SPEC's ranges only (198.18.0.0/15, 2001:db8::/32), in
namespaces made here, with no default route. Deleting a namespace deletes its
veth end (and so the peer) with every qdisc, filter and XDP program on it;
the registry does that even when a test fails.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from typing import Callable, Iterator

import pytest


def sh(cmd: str, check: bool = True) -> str:
    r = subprocess.run(cmd, shell=True, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"{cmd}: {r.stderr.strip()}")
    return r.stdout


class Cleanup:
    """Undo actions, run last-in first-out, each even if an earlier one failed."""

    def __init__(self) -> None:
        self.actions: list[Callable[[], None]] = []

    def add(self, fn: Callable[[], None]) -> None:
        self.actions.append(fn)

    def run(self) -> None:
        while self.actions:
            try:
                self.actions.pop()()
            except Exception:
                pass


@pytest.fixture
def cleanup() -> Iterator[Cleanup]:
    c = Cleanup()
    try:
        yield c
    finally:
        c.run()


@pytest.fixture
def netns(cleanup: Cleanup) -> Callable[[], str]:
    """Factory: a new empty namespace (lo up), deleted after the test."""

    def make() -> str:
        name = f"tcft-{uuid.uuid4().hex[:8]}"
        sh(f"ip netns add {name}")
        cleanup.add(lambda: sh(f"ip netns del {name}", check=False))
        sh(f"ip -n {name} link set lo up")
        return name

    return make


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

    def exec_a(self, cmd: str) -> str:
        return sh(f"ip netns exec {self.ns_a} {cmd}")

    def exec_b(self, cmd: str) -> str:
        return sh(f"ip netns exec {self.ns_b} {cmd}")


def make_pair(netns: Callable[[], str], addresses: bool = True) -> VethPair:
    p = VethPair(netns(), netns())
    sh(f"ip link add {p.dev_a} netns {p.ns_a} type veth peer name {p.dev_b} netns {p.ns_b}")
    for ns, dev, ip4, ip6 in ((p.ns_a, p.dev_a, p.ip4_a, p.ip6_a), (p.ns_b, p.dev_b, p.ip4_b, p.ip6_b)):
        if addresses:
            sh(f"ip -n {ns} addr add {ip4}/24 dev {dev}")
            # nodad: usable at once; no router solicitations to wait for
            sh(f"ip -n {ns} addr add {ip6}/64 dev {dev} nodad")
        else:
            # a silent link: no IPv6 link-local, DAD, MLD or router solicitations
            sh(f"ip netns exec {ns} sysctl -qw net.ipv6.conf.{dev}.disable_ipv6=1")
        sh(f"ip -n {ns} link set {dev} up")
    return p


@pytest.fixture
def veth_pair(netns: Callable[[], str]) -> VethPair:
    """Addressed pair (IPv4 + IPv6) for socket traffic."""
    return make_pair(netns)


@pytest.fixture
def silent_pair(netns: Callable[[], str]) -> VethPair:
    """Unaddressed pair, IPv6 off: only the frames a test injects cross it."""
    return make_pair(netns, addresses=False)


@pytest.fixture
def pin_dir(cleanup: Cleanup) -> Iterator[str]:
    """A pin directory of the test's own: a real deployment's pins are never touched."""
    path = f"/sys/fs/bpf/tcflow-test-{uuid.uuid4().hex[:8]}"
    cleanup.add(lambda: sh(f"rm -rf {path}", check=False))
    cleanup.add(lambda: subprocess.run([sys.executable, "-m", "tcflow", "detach", "--all", "--pin-dir", path],
                                       capture_output=True))
    yield path


@pytest.fixture
def env(pin_dir: str) -> dict[str, str]:
    return dict(os.environ, TCFLOW_PIN_DIR=pin_dir)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # Belt and braces: nothing named like ours survives the session.
    if os.geteuid() == 0:
        for line in sh("ip netns list", check=False).splitlines():
            name = line.split()[0] if line.strip() else ""
            if name.startswith("tcft-"):
                sh(f"ip netns del {name}", check=False)
        sh("rm -rf /sys/fs/bpf/tcflow-test-*", check=False)


def foreign_bpf(text: str):  # noqa: ANN201 - a bcc.BPF
    """Compile someone else's program with bcc, with the headers tcflow found."""
    from bcc import BPF

    from tcflow import kheaders

    kheaders.apply(kheaders.locate())
    return BPF(text=text)
