"""Coexistence with other programs, restarts without loss, faults, limits.

Each test names the guarantee it backs in docs/guarantees.md.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from typing import Any, Callable

import pytest

from tcflow.host.sandbox import Sandbox, VethPair
from tests.support.cli import REPO, Live, leftovers, nonzero, run
from tests.support.counting import FRAMES, RECV_B, RECV_P, SEND_B, SEND_P, both_ways, key
from tests.support.shell import foreign_bpf, sh
from tests.traffic_gen.frames import send_frames

COUNTING_TC = r"""
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>
BPF_ARRAY(seen, u64, 1);
int NAME(struct __sk_buff *skb) {
    int k = 0;
    u64 *v = seen.lookup(&k);
    if (v) __sync_fetch_and_add(v, 1);
    return TC_ACT_UNSPEC;
}
"""

COUNTING_XDP = r"""
#include <uapi/linux/bpf.h>
BPF_ARRAY(seen, u64, 1);
int NAME(struct xdp_md *ctx) {
    int k = 0;
    u64 *v = seen.lookup(&k);
    if (v) __sync_fetch_and_add(v, 1);
    return XDP_PASS;
}
"""


class Counting:
    """Someone else's program that counts the packets it sees."""

    def __init__(self, name: str, xdp: bool = False):
        from bcc import BPF

        src = (COUNTING_XDP if xdp else COUNTING_TC).replace("NAME", name)
        self.bpf = foreign_bpf(src)
        self.fd = self.bpf.load_func(name.encode(), BPF.XDP if xdp else BPF.SCHED_CLS).fd
        self.name = name

    @property
    def seen(self) -> int:
        return int(self.bpf[b"seen"][ctypes.c_int(0)].value)


def _ipr(ns: str) -> Any:
    from pyroute2 import IPRoute

    from tcflow.system import netns as tns

    return IPRoute(netns=tns.resolve(ns).path, flags=0)


def add_filter(p: VethPair, prog: Counting, parent: str, prio: int, handle: int) -> None:
    with _ipr(p.ns_a) as ipr:
        idx = ipr.link_lookup(ifname=p.dev_a)[0]
        try:
            ipr.tc("add", "clsact", idx)
        except Exception:
            pass  # already there
        ipr.tc("add-filter", "bpf", idx, handle, fd=prog.fd, name=prog.name, parent=parent, prio=prio,
               direct_action=True)


def settle(read: Callable[[], Any], tries: int = 50) -> Any:
    last = None
    for _ in range(tries):
        cur = read()
        if last is not None and cur == last:
            return cur
        last = cur
        time.sleep(0.05)
    return cur


def test_coexists_with_filters_before_and_after_on_both_hooks(silent_pair: VethPair) -> None:
    """Filters before and after tcflow's still run (TC_ACT_UNSPEC) and survive its detach."""
    import tcflow

    p = silent_pair
    progs = {(hook, when): Counting(f"{when}_{hook}") for hook in ("ingress", "egress")
             for when in ("before", "after")}
    for (hook, when), prog in progs.items():
        add_filter(p, prog, "ffff:fff2" if hook == "ingress" else "ffff:fff3", 5 if when == "before" else 3000,
                   handle=1 if when == "before" else 2)
    n = len(FRAMES)
    with tcflow.Monitor([p.dev_a], netns=p.ns_a, ingress="tc") as m:
        both_ways(p)
        got = settle(lambda: m.snapshot().interfaces[key(p)].bytes)
    assert nonzero(got) == RECV_B + SEND_B
    assert {k: v.seen for k, v in progs.items()} == {k: n for k in progs}
    for hook in ("ingress", "egress"):
        state = sh(f"tc -n {p.ns_a} filter show dev {p.dev_a} {hook}")
        assert f"before_{hook}" in state and f"after_{hook}" in state and "tcflow" not in state
    both_ways(p)  # theirs still count after tcflow left
    assert settle(lambda: {k: v.seen for k, v in progs.items()}) == {k: 2 * n for k in progs}


def test_coexists_with_another_xdp_program_by_counting_on_tc(silent_pair: VethPair, pin_env: dict[str, str]) -> None:
    p = silent_pair
    xdp = Counting("their_xdp", xdp=True)
    with _ipr(p.ns_a) as ipr:
        idx = ipr.link_lookup(ifname=p.dev_a)[0]
        ipr.link("set", index=idx, xdp={"attrs": [("IFLA_XDP_FD", xdp.fd), ("IFLA_XDP_FLAGS", 1 << 1)]})
    refused = run("attach", "--netns", p.ns_a, p.dev_a, "--ingress", "xdp", env=pin_env)
    assert refused.returncode == 1 and "their_xdp" in refused.stderr and "--ingress tc" in refused.stderr
    live = Live("attach", "--netns", p.ns_a, p.dev_a, "--json", "--interval", "0.2", env=pin_env)  # auto -> tc
    try:
        assert live.next()["interfaces"][key(p)]["hook"]["ingress"] == "tc"
        send_frames(p.ns_b, p.dev_b, FRAMES)
        live.until(lambda s: nonzero(s["interfaces"][key(p)]["bytes"]) == RECV_B)
        live.signal(signal.SIGTERM)
        live.rest()
    finally:
        live.kill()
    assert settle(lambda: xdp.seen) == len(FRAMES)
    assert "xdpgeneric" in sh(f"ip -n {p.ns_a} link show {p.dev_a}")  # theirs stays
    send_frames(p.ns_b, p.dev_b, FRAMES)
    assert settle(lambda: xdp.seen) == 2 * len(FRAMES)


# -- restart without loss ------------------------------------------------------------

@pytest.mark.parametrize("ingress", ["xdp", "tc"])
def test_kill_9_during_traffic_then_restart_loses_nothing(silent_pair: VethPair, pin_env: dict[str, str],
                                                          pin_dir: str, ingress: str) -> None:
    p = silent_pair
    batches, done = 30, threading.Event()
    sent = {"n": 0}

    def traffic() -> None:
        try:
            for _ in range(batches):
                both_ways(p)
                sent["n"] += 1
                time.sleep(0.05)
        finally:
            done.set()

    args = ("attach", "--pin", "--netns", p.ns_a, p.dev_a, "--json", "--interval", "0.2", "--ingress", ingress)
    first = Live(*args, env=pin_env)
    t = threading.Thread(target=traffic)
    try:
        first.next()
        t.start()
        while sent["n"] < 5:
            time.sleep(0.01)
        first.p.send_signal(signal.SIGKILL)
        first.p.wait()
    finally:
        first.kill()
    killed_at = sent["n"]
    while sent["n"] < killed_at + 5 and not done.is_set():
        time.sleep(0.01)  # traffic in the gap, with no tcflow process at all
    second = Live(*args, env=pin_env)
    try:
        second.next()
        t.join()
        want = Counter({k: v * batches for k, v in (RECV_B + SEND_B).items()})
        wantp = Counter({k: v * batches for k, v in (RECV_P + SEND_P).items()})
        snap = second.until(lambda s: nonzero(s["interfaces"][key(p)]["bytes"]) == want)
        assert nonzero(snap["interfaces"][key(p)]["packets"]) == wantp
        second.signal(signal.SIGTERM)
        second.rest()
    finally:
        second.kill()
    egress = sh(f"tc -n {p.ns_a} filter show dev {p.dev_a} egress")
    assert egress.count("handle 0x7cf1") == 1  # adopted, not attached twice
    assert run("detach", "--all", env=pin_env).returncode == 0
    assert leftovers(p.ns_a, p.dev_a, pin_dir) == []


# -- faults -----------------------------------------------------------------------------

def test_namespace_deleted_while_attached(sandbox: Sandbox, pin_env: dict[str, str]) -> None:
    """tcflow reports it, exits 1, and lets the namespace go (its veth disappears)."""
    p = sandbox.pair(addresses=False)
    live = Live("attach", "--netns", p.ns_a, p.dev_a, "--json", "--interval", "0.2", env=pin_env)
    try:
        live.next()
        sh(f"ip netns del {p.ns_a}")
        live.rest(timeout=30)
        assert live.p.returncode == 1
        err = live.stderr().strip().splitlines()
        assert err[-1].startswith("tcflow: error: the network namespace was deleted")
    finally:
        live.kill()
    for _ in range(100):  # the namespace is freed once nothing holds it: the pair goes with it
        if p.dev_b not in sh(f"ip -n {p.ns_b} link show", check=False):
            break
        time.sleep(0.1)
    assert p.dev_b not in sh(f"ip -n {p.ns_b} link show", check=False)


def test_second_tcflow_on_the_same_interface_refuses(silent_pair: VethPair, pin_env: dict[str, str]) -> None:
    p = silent_pair
    first = Live("attach", "--netns", p.ns_a, p.dev_a, "--json", "--interval", "0.2", env=pin_env)
    try:
        first.next()
        for ingress in ("auto", "xdp", "tc"):
            second = run("attach", "--netns", p.ns_a, p.dev_a, "--ingress", ingress, "--pin", env=pin_env)
            assert second.returncode == 1, second.stderr
            # it names the running tcflow (not a detach that would blind it)
            assert f"already counted by a running tcflow (pid {first.p.pid}" in second.stderr, second.stderr
            assert "tcflow status" in second.stderr and "detach" not in second.stderr
        send_frames(p.ns_a, p.dev_a, FRAMES)  # the first one is unharmed
        first.until(lambda s: nonzero(s["interfaces"][key(p)]["bytes"]) == SEND_B)
        assert sh(f"tc -n {p.ns_a} filter show dev {p.dev_a} egress").count("handle 0x7cf1") == 1
        first.signal(signal.SIGTERM)
        first.rest()
    finally:
        first.kill()
    assert leftovers(p.ns_a, p.dev_a, pin_env["TCFLOW_PIN_DIR"]) == []


def _in_mount_ns(script: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run ``script`` in a private mount namespace: mounts there never reach the host."""
    import sys

    from tests.support.cli import REPO

    return subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script, "-",
                           sys.executable, *args], capture_output=True, text=True, cwd=REPO, env=env, timeout=120)


def test_bpffs_not_mounted_is_mounted_by_pin(silent_pair: VethPair, pin_env: dict[str, str]) -> None:
    p = silent_pair
    script = ('umount /sys/fs/bpf 2>/dev/null; umount /sys/fs/bpf 2>/dev/null; '
              'grep -q " /sys/fs/bpf " /proc/mounts && exit 99; '
              '"$1" -m tcflow attach --pin --pin-dir /sys/fs/bpf/tcflow --netns "$2" "$3" --count 1 --json || exit; '
              'grep " /sys/fs/bpf " /proc/mounts; ls /sys/fs/bpf/tcflow')
    r = _in_mount_ns(script, p.ns_a, p.dev_a, env=pin_env)
    assert r.returncode == 0, r.stderr
    assert "bpf /sys/fs/bpf bpf" in r.stdout and "mode=700" in r.stdout  # root-only
    assert "counters" in r.stdout and "meta" in r.stdout
    # the pins went with that mount namespace; the programs stay: detach finds them anyway
    assert run("detach", "--netns", p.ns_a, p.dev_a, env=pin_env).returncode == 0
    assert leftovers(p.ns_a, p.dev_a) == []  # the clsact qdisc too: the journal says it was tcflow's


def test_pin_errors_are_one_line_and_leave_nothing(silent_pair: VethPair, pin_env: dict[str, str],
                                                  tmp_path: Any) -> None:
    p = silent_pair
    r = run("attach", "--pin", "--pin-dir", str(tmp_path / "pins"), "--netns", p.ns_a, p.dev_a, env=pin_env)
    assert r.returncode == 1 and r.stderr.startswith("tcflow: error: ") and "not a bpf filesystem" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert leftovers(p.ns_a, p.dev_a) == []
    # a read-only bpffs (a fresh instance, mounted read-only in a private mount namespace)
    script = 'mount -t bpf -o ro bpf /sys/fs/bpf && "$1" -m tcflow attach --pin --netns "$2" "$3" --count 1'
    r = _in_mount_ns(script, p.ns_a, p.dev_a, env=pin_env)
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stderr.startswith("tcflow: error: cannot create") and "Read-only file system" in r.stderr
    assert leftovers(p.ns_a, p.dev_a) == []


# -- limits ------------------------------------------------------------------------------

def test_more_interfaces_than_the_map_holds_is_an_error(silent_pair: VethPair, pin_env: dict[str, str]) -> None:
    p = silent_pair
    extra = ["tcfe0", "tcfe1"]
    for dev in extra:
        sh(f"ip -n {p.ns_a} link add {dev} type veth peer name {dev}p")
        sh(f"ip -n {p.ns_a} link set {dev} up")
    r = run("attach", "--netns", p.ns_a, p.dev_a, *extra, "--max-interfaces", "2", "--count", "1", env=pin_env)
    assert r.returncode == 1
    assert r.stderr.startswith("tcflow: error: all 2 interface slots are in use") and "--max-interfaces" in r.stderr
    for dev in (p.dev_a, *extra):
        assert leftovers(p.ns_a, dev) == [], dev
    ok = run("attach", "--netns", p.ns_a, p.dev_a, *extra, "--max-interfaces", "3", "--count", "1", "--json",
             env=pin_env)
    assert ok.returncode == 0, ok.stderr


def test_500_veth_cycles_under_serve_follow_leak_nothing(make_netns: Callable[[], str],
                                                        pin_env: dict[str, str]) -> None:
    """Netlink overruns (ENOBUFS) under churn are answered by a full resync:
    the process lives, its attached set equals the matching links, and fds,
    slots and programs are back where they started."""
    import json
    import socket as so
    import urllib.request

    ns = make_netns()
    keep = ["fkeep0", "fkeep1", "fkeep2"]
    sh(f"ip -n {ns} link add fkeep0 type veth peer name fkeep1")
    sh(f"ip -n {ns} link add fkeep2 type veth peer name xpeer")
    with so.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "tcflow", "serve", "--netns", ns, "--match", "f*", "--follow",
                             "--listen", f"127.0.0.1:{port}"], cwd=REPO, env=pin_env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)

    def health() -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=30) as r:
            return json.loads(r.read())

    def traffic() -> set[str]:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/traffic", timeout=30) as r:
            return set(json.loads(r.read())["interfaces"])

    try:
        for _ in range(600):
            try:
                if health()["interfaces"] == 3:
                    break
            except OSError:
                time.sleep(0.1)
        start = health()
        fds0 = len(os.listdir(f"/proc/{proc.pid}/fd"))
        for i in range(500):  # back to back: tcflow is busy attaching while events pile up
            subprocess.run(["ip", "-n", ns, "-batch", "-"], input=f"link add f{i} type veth peer name g{i}\n"
                           f"link set f{i} up\n", text=True, check=True, timeout=30)  # --follow takes links up
            subprocess.run(["ip", "-n", ns, "link", "del", f"f{i}"], check=True, timeout=30)
        want = {f"{ns}/{k}" for k in keep}
        end = time.monotonic() + 60
        while time.monotonic() < end and (traffic() != want or health()["slots_used"] != 3):
            time.sleep(0.2)
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert traffic() == want
        after = health()
        assert (after["slots_used"], after["programs"]) == (start["slots_used"], start["programs"]) == (3, 2)
        # a leak stays; an fd in use this instant (the HTTP connection just
        # answered, a program opened by id for a hook check) goes within moments
        end = time.monotonic() + 5
        while len(os.listdir(f"/proc/{proc.pid}/fd")) > fds0 and time.monotonic() < end:
            time.sleep(0.2)
        assert len(os.listdir(f"/proc/{proc.pid}/fd")) <= fds0
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]
    assert "Traceback" not in err and "CONFIG_NET_SCH_INGRESS" not in err  # vanished: not the kernel


def test_a_netlink_overrun_is_answered_by_a_full_resync(sandbox: Sandbox) -> None:
    """Flood a namespace's link events past a tiny socket buffer: the kernel
    reports ENOBUFS (proved on a raw socket), and Watch.drain plus a sync
    take it as "events were lost" and diff a full dump instead of failing."""
    import errno
    import socket as so

    from tcflow.engine.agent import Agent
    from tcflow.engine.settings import Settings
    from tcflow.engine.watch import RTMGRP_LINK
    from tcflow.model.targets import Target, Where
    from tcflow.system.netns import resolve

    ns = sandbox.netns()
    sh(f"ip -n {ns} link add fkeep type veth peer name xpeer")
    agent = Agent(Settings(ingress="tc"))
    agent.start([Target(Where(ns), globs=("f*",), follow=True)])
    try:
        watch = next(iter(agent.watches.values()))
        watch.events_fd()
        probe = resolve(ns)
        from tcflow.system.netns import run_in

        raw = run_in(probe.path, lambda: so.socket(so.AF_NETLINK, so.SOCK_RAW | so.SOCK_NONBLOCK, 0))
        for s in (raw, watch._events):
            s.setsockopt(so.SOL_SOCKET, so.SO_RCVBUF, 1)  # the kernel's minimum
        raw.bind((0, RTMGRP_LINK))
        batch = "".join(f"link add f{i} type veth peer name g{i}\nlink set f{i} up\n" for i in range(40))
        subprocess.run(["ip", "-n", ns, "-batch", "-"], input=batch, text=True, check=True)
        with pytest.raises(OSError) as e:
            while raw.recv(65536):
                pass
        assert e.value.errno == errno.ENOBUFS  # the overrun happened
        raw.close()
        agent.sync(watch)  # drains through the same overrun, then resyncs
        assert {ln.ifname for ln in agent.interfaces()} == {"fkeep"} | {f"f{i}" for i in range(40)}
    finally:
        agent.close()


def test_pinned_follow_releases_gone_interfaces_and_detach_stale_clears_old_ones(
        make_netns: Callable[[], str], pin_env: dict[str, str], pin_dir: str) -> None:
    import json

    ns = make_netns()
    for i in range(3):
        sh(f"ip -n {ns} link add f{i} type veth peer name g{i}")
    live = Live("attach", "--pin", "--netns", ns, "--match", "f*", "--follow", "--json", "--interval", "0.2",
                env=pin_env)
    try:
        live.until(lambda s: len(s["interfaces"]) == 3)
        for cycle in range(20):  # container churn: each start/stop must not leave a pinned entry
            sh(f"ip -n {ns} link add f9{cycle} type veth peer name g9{cycle}")
            sh(f"ip -n {ns} link set f9{cycle} up")  # --follow takes a link once it is up
            live.until(lambda s, c=cycle: f"{ns}/f9{c}" in s["interfaces"])
            sh(f"ip -n {ns} link del f9{cycle}")
            live.until(lambda s, c=cycle: f"{ns}/f9{c}" not in s["interfaces"])
        st = json.loads(run("status", "--json", env=pin_env).stdout)
        assert st["pinned"] == 3 and st["stale_pins"] == []
        live.p.send_signal(signal.SIGKILL)  # an older run, gone; then its interface goes too
        live.p.wait()
    finally:
        live.kill()
    sh(f"ip -n {ns} link del f2")
    st = json.loads(run("status", "--json", env=pin_env).stdout)
    assert [s["interface"] for s in st["stale_pins"]] == ["f2"]
    r = run("detach", "--stale", env=pin_env)
    assert r.returncode == 0 and "forgot" in r.stdout and "f2" in r.stdout, r.stdout + r.stderr
    st = json.loads(run("status", "--json", env=pin_env).stdout)
    assert st["pinned"] == 2 and st["stale_pins"] == []
    assert run("detach", "--all", env=pin_env).returncode == 0
    for dev in ("f0", "f1"):
        assert leftovers(ns, dev, pin_dir) == []


def test_kill_9_at_random_moments_of_start_up_then_detach_leaves_nothing(silent_pair: VethPair,
                                                                         pin_env: dict[str, str]) -> None:
    """Killed anywhere in start-up (compile, load, clsact, filters), then
    `tcflow detach`: no filter, no XDP program and no empty clsact qdisc stays.
    Seeded; the moments cluster around the attach step, after the compile."""
    import random

    p = silent_pair
    t0 = time.monotonic()
    first = Live("attach", key(p), "--json", env=pin_env)
    first.next()
    startup = time.monotonic() - t0
    first.signal(signal.SIGTERM)
    first.rest()
    rng = random.Random(2026)
    for i in range(12):
        live = Live("attach", key(p), "--json", "--ingress", "xdp" if i % 3 == 2 else "tc", env=pin_env)
        time.sleep(rng.uniform(0.6, 1.1) * startup)
        live.p.send_signal(signal.SIGKILL)
        live.p.wait()
        r = run("detach", key(p), env=pin_env)
        assert r.returncode in (0, 1), r.stderr  # 1: killed before it attached anything
        assert r.returncode == 0 or "tcflow is not attached here" in r.stderr, r.stderr
        assert leftovers(p.ns_a, p.dev_a) == [], (i, r.stdout, r.stderr)
