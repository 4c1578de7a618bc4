"""Namespaces and veth pairs for a test: the plugin's ``tcflow_veth`` and
``tcflow_netns`` (plugin.py), usable without pytest too.

    with Lab("myapp-") as lab:
        veth = lab.veth()
        with veth.meter() as m:
            veth.a.run(["ping", "-c", "1", veth.b.ipv4], check=True)
        assert m.packets["L3_RAW_SEND_V4"] == 1

Made by tcflow.host.sandbox (the same code tcflow's demo, tests and bench
use): docs/SPEC.md's test ranges only (198.18.0.0/15, 2001:db8::/32), no
default route, nothing that reaches outside. A Lab removes what it made,
last first, when it closes, also after a failure; processes started with
``popen()`` are killed then.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Callable, Optional, Sequence, TypeVar

from tcflow.host.sandbox import Sandbox, VethPair, run
from tcflow.system.netns import resolve, run_in
from tcflow.testing.meter import Meter

RUN_TIMEOUT_S = 120.0  # Endpoint.run()'s default: a test never waits for ever
KILL_WAIT_S = 5.0
QUIET_S = 0.3  # a new link is quiet once neither end sent anything this long...
QUIET_MAX_S = 3.0  # ... or after this, whatever it still sends
T = TypeVar("T")

# Set in each namespace before its veth exists: IPv6 on a new link sends no
# router solicitations, no duplicate address detection for its link-local
# address, and its MLD reports at once, not up to a second later,
# so that the link is quiet (QUIET_S) by the time a test starts counting.
QUIET_SYSCTLS = ("net.ipv6.conf.default.router_solicitations=0", "net.ipv6.conf.default.dad_transmits=0",
                 "net.ipv6.conf.default.router_solicitation_delay=0",
                 "net.ipv6.conf.default.mldv1_unsolicited_report_interval=1",
                 "net.ipv6.conf.default.mldv2_unsolicited_report_interval=1")


@dataclass
class Endpoint:
    """One end of a veth pair: its namespace (a name under /run/netns), its
    interface and addresses."""

    netns: str
    ifname: str
    ipv4: str
    ipv6: str
    _lab: Optional["Lab"] = field(default=None, repr=False, compare=False)

    @property
    def path(self) -> str:
        return resolve(self.netns).path

    def run(self, argv: Sequence[str], **kwargs: Any) -> "subprocess.CompletedProcess[Any]":
        """``subprocess.run`` of ``argv`` inside this namespace (``ip netns
        exec``); ``timeout`` defaults to RUN_TIMEOUT_S."""
        kwargs.setdefault("timeout", RUN_TIMEOUT_S)
        return subprocess.run(["ip", "netns", "exec", self.netns, *argv], **kwargs)

    def popen(self, argv: Sequence[str], **kwargs: Any) -> "subprocess.Popen[Any]":
        """``subprocess.Popen`` of ``argv`` inside this namespace; killed when
        the lab closes if it still runs."""
        p = subprocess.Popen(["ip", "netns", "exec", self.netns, *argv], start_new_session=True, **kwargs)
        if self._lab is not None:
            self._lab.processes.append(p)
        return p

    def call(self, fn: Callable[[], T]) -> T:
        """Run a Python callable in this namespace (this thread enters it and
        comes back); what it returns. Sockets it makes stay in the namespace."""
        return run_in(self.path, fn)

    def socket(self, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM) -> socket.socket:
        """A socket made in this namespace."""
        return self.call(lambda: socket.socket(family, kind))

    def meter(self, **options: Any) -> Meter:
        """A Meter on this end's interface (Meter's options)."""
        return Meter(self.ifname, netns=self.netns, **options)


@dataclass
class Veth:
    """Two fresh namespaces joined by a veth pair; ``a`` is the end a meter
    counts on by default. ``pair``: the same as tcflow.host.sandbox's VethPair."""

    a: Endpoint
    b: Endpoint
    pair: VethPair

    def meter(self, **options: Any) -> Meter:
        """Count on ``a``'s interface for the duration of a ``with`` block."""
        return self.a.meter(**options)


class Lab:
    """Namespaces, veth pairs and processes of one test, named ``prefix`` +
    a random tag (unique across pytest-xdist workers), removed on close."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.sandbox = Sandbox(prefix)
        self.processes: list[subprocess.Popen[Any]] = []

    def netns(self) -> str:
        """A new empty namespace (lo up); its name."""
        return self.sandbox.netns()

    def veth(self, addresses: bool = True, quiet: bool = True, ipv4: tuple[str, str] = ("198.18.0.1", "198.18.0.2"),
             ipv6: tuple[str, str] = ("2001:db8::1", "2001:db8::2")) -> Veth:
        """Two new namespaces joined by a veth, IPv4 /24 and IPv6 /64 on both
        ends (``addresses``; else a silent link with IPv6 off). ``quiet``:
        returns once the new link's own chatter (IPv6 MLD reports) is over, so
        a meter started then sees only what the test sends."""
        for a in ipv4:
            if not a.startswith(("198.18.", "198.19.")):
                raise ValueError(f"{a}: tcflow's labs use 198.18.0.0/15 only")
        for a in ipv6:
            if not a.lower().startswith("2001:db8:"):
                raise ValueError(f"{a}: tcflow's labs use 2001:db8::/32 only")
        pair = self.sandbox.pair(addresses=addresses, quiet=QUIET_SYSCTLS if quiet else (),
                                 ip4=ipv4, ip6=ipv6)
        if quiet:
            wait_quiet(pair)
        return Veth(Endpoint(pair.ns_a, pair.dev_a, pair.ip4_a, pair.ip6_a, self),
                    Endpoint(pair.ns_b, pair.dev_b, pair.ip4_b, pair.ip6_b, self), pair)

    def close(self) -> None:
        for p in reversed(self.processes):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except OSError:
                    pass
                try:
                    p.wait(KILL_WAIT_S)
                except subprocess.TimeoutExpired:
                    pass
        self.processes.clear()
        self.sandbox.close()

    def __enter__(self) -> "Lab":
        return self

    def __exit__(self, t: Optional[type[BaseException]], e: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self.close()


def _tx(pair: VethPair) -> tuple[int, ...]:
    """Packets each end sent so far (one `ip -s` per end)."""
    out = []
    for ns, dev in ((pair.ns_a, pair.dev_a), (pair.ns_b, pair.dev_b)):
        doc = json.loads(run("ip", "-n", ns, "-j", "-s", "link", "show", "dev", dev) or "[]")
        out.append(int(doc[0]["stats64"]["tx"]["packets"]) if doc else 0)
    return tuple(out)


def _tentative(pair: VethPair) -> bool:
    """An IPv6 address of either end is still tentative: when it is not, its
    MLD reports go (at once, QUIET_SYSCTLS)."""
    for ns, dev in ((pair.ns_a, pair.dev_a), (pair.ns_b, pair.dev_b)):
        doc = json.loads(run("ip", "-n", ns, "-j", "-6", "addr", "show", "dev", dev) or "[]")
        if any(a.get("tentative") for d in doc for a in d.get("addr_info", [])):
            return True
    return False


def wait_quiet(pair: VethPair) -> None:
    """Until no IPv6 address is tentative and neither end sent a packet for
    QUIET_S (at most QUIET_MAX_S)."""
    end = time.monotonic() + QUIET_MAX_S
    last = _tx(pair)
    since = time.monotonic()
    while time.monotonic() < end:
        time.sleep(0.05)
        now = _tx(pair)
        if now != last or _tentative(pair):
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= QUIET_S:
            return
