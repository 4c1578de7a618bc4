"""Namespaces never mix, detach removes only tcflow's objects, failures roll back."""

from __future__ import annotations

import subprocess

import pytest

import tcflow
from tcflow.host.sandbox import Sandbox, VethPair
from tcflow.model.errors import InterfaceError
from tests.support.counting import FRAMES, settle, totals
from tests.support.shell import FOREIGN, foreign_bpf, sh
from tests.traffic_gen.frames import send_frames


def ifindex(ns: str, dev: str) -> int:
    return int(sh(f"ip -n {ns} -o link show {dev}").split(":")[0])


def hooks_left(ns: str, dev: str) -> str:
    return sh(f"ip -n {ns} link show {dev}") + sh(f"tc -n {ns} qdisc show dev {dev}") + \
        sh(f"tc -n {ns} filter show dev {dev} ingress") + sh(f"tc -n {ns} filter show dev {dev} egress")


@pytest.mark.parametrize("ingress", ["xdp", "tc"])
def test_same_ifindex_in_two_namespaces_never_mix(sandbox: Sandbox, ingress: str) -> None:
    one, two = sandbox.pair(addresses=False), sandbox.pair(addresses=False)
    assert ifindex(one.ns_a, one.dev_a) == ifindex(two.ns_a, two.dev_a)
    with tcflow.Monitor([one.dev_a], netns=one.ns_a, ingress=ingress) as m1, \
            tcflow.Monitor([two.dev_a], netns=two.ns_a, ingress=ingress) as m2:
        send_frames(one.ns_b, one.dev_b, FRAMES)
        c1 = settle(m1, f"{one.ns_a}/{one.dev_a}")
        c2 = m2.snapshot().interfaces[f"{two.ns_a}/{two.dev_a}"]
    assert +__import__("collections").Counter(c1.bytes) == totals(FRAMES, "recv")[0]
    assert not any(c2.bytes.values()) and not any(c2.packets.values())


def test_detach_leaves_nothing_when_it_made_the_qdisc(silent_pair: VethPair) -> None:
    p = silent_pair
    for ingress in ("xdp", "tc"):
        with tcflow.Monitor([p.dev_a], netns=p.ns_a, ingress=ingress):
            state = hooks_left(p.ns_a, p.dev_a)
            assert "tcflow_egress" in state and "clsact" in state
            assert ("prog/xdp" in state) == (ingress == "xdp")
        state = hooks_left(p.ns_a, p.dev_a)
        assert "clsact" not in state and "tcflow" not in state and "xdp" not in state


def test_detach_keeps_a_foreign_clsact_and_its_filters(silent_pair: VethPair) -> None:
    """Someone else's clsact with a bpf filter on each hook (this kernel has
    no other classifier built in) survives tcflow's attach and detach."""
    from bcc import BPF
    from pyroute2 import IPRoute

    from tcflow.system import netns as tns

    p = silent_pair
    prog = foreign_bpf(FOREIGN).load_func(b"foreign", BPF.SCHED_CLS)
    with IPRoute(netns=tns.resolve(p.ns_a).path, flags=0) as ipr:
        idx = ipr.link_lookup(ifname=p.dev_a)[0]
        ipr.tc("add", "clsact", idx)
        for parent in ("ffff:fff2", "ffff:fff3"):
            ipr.tc("add-filter", "bpf", idx, 1, fd=prog.fd, name="foreign", parent=parent, prio=5,
                   direct_action=True)
    with tcflow.Monitor([p.dev_a], netns=p.ns_a, ingress="tc"):
        assert "tcflow_ingress" in hooks_left(p.ns_a, p.dev_a)
    state = hooks_left(p.ns_a, p.dev_a)
    assert "clsact" in state and "tcflow" not in state
    for hook in ("ingress", "egress"):
        assert "foreign" in sh(f"tc -n {p.ns_a} filter show dev {p.dev_a} {hook}")


def test_failed_attach_rolls_back(silent_pair: VethPair) -> None:
    p = silent_pair
    with pytest.raises(InterfaceError, match="no such interface"):
        tcflow.Monitor([p.dev_a, "tcf-nope"], netns=p.ns_a).attach()
    state = hooks_left(p.ns_a, p.dev_a)
    assert "clsact" not in state and "xdp" not in state


def test_unknown_namespace_is_not_created() -> None:
    with pytest.raises(InterfaceError, match="no such network namespace"):
        tcflow.Monitor(["eth0"], netns="tcft-does-not-exist").attach()
    assert "tcft-does-not-exist" not in subprocess.run(["ip", "netns", "list"], capture_output=True, errors="replace",
                                                      text=True).stdout


DROP_ALL = FOREIGN.replace("int foreign", "int dropper").replace("TC_ACT_UNSPEC", "TC_ACT_SHOT")


def rx_packets(ns: str, dev: str) -> int:
    return int(sh(f"ip netns exec {ns} cat /sys/class/net/{dev}/statistics/rx_packets"))


def test_send_counts_packets_dropped_after_the_hook(silent_pair: VethPair) -> None:
    """SPEC: send is counted where the hook sees it, so a later drop (here a
    filter after tcflow's that drops everything) still counts."""
    from bcc import BPF
    from pyroute2 import IPRoute

    from tcflow.host.hooks import TC_PRIO
    from tcflow.system import netns as tns

    p = silent_pair
    with tcflow.Monitor([p.dev_a], netns=p.ns_a, ingress="tc") as m:
        prog = foreign_bpf(DROP_ALL).load_func(b"dropper", BPF.SCHED_CLS)
        with IPRoute(netns=tns.resolve(p.ns_a).path, flags=0) as ipr:
            idx = ipr.link_lookup(ifname=p.dev_a)[0]
            ipr.tc("add-filter", "bpf", idx, 2, fd=prog.fd, name="dropper", parent="ffff:fff3",
                   prio=TC_PRIO + 1, direct_action=True)
        before = rx_packets(p.ns_b, p.dev_b)
        send_frames(p.ns_a, p.dev_a, FRAMES, expect_drops=True)
        got = settle(m, f"{p.ns_a}/{p.dev_a}")
    assert rx_packets(p.ns_b, p.dev_b) == before  # all dropped after our hook
    assert +__import__("collections").Counter(got.bytes) == totals(FRAMES, "send")[0]
