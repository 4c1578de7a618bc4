"""One process, many namespaces: one compile, programs loaded once per
namespace, each interface counted exactly, namespaces that go let go."""

from __future__ import annotations

import io
import json
import signal
import sys
import threading
from typing import Any

import pytest

from tcflow.bpf.loader import Datapath
from tcflow.cli.main import main
from tcflow.engine import agent as agent_module
from tcflow.engine.agent import Agent
from tcflow.engine.settings import Settings
from tcflow.host.sandbox import Sandbox, VethPair
from tcflow.model.targets import Target, Where
from tests.support.cli import Live, leftovers, nonzero, run
from tests.support.counting import FRAMES, RECV_B, RECV_P, SEND_B, SEND_P, key
from tests.support.shell import sh
from tests.traffic_gen.frames import send_frames


class CountingDatapath(Datapath):
    compiles = 0

    def __init__(self, *a: Any, **kw: Any):
        CountingDatapath.compiles += 1
        super().__init__(*a, **kw)


class Lines(io.StringIO):
    """stdout for main(): calls ``on_line`` after each full line."""

    def __init__(self, on_line: Any):
        super().__init__()
        self.on_line = on_line

    def write(self, s: str) -> int:
        n = super().write(s)
        if s.endswith("\n"):
            self.on_line(self.getvalue().count("\n"))
        return n

    def isatty(self) -> bool:
        return False


def test_one_process_counts_three_namespaces_exactly_with_one_compile(
        sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch, pin_dir: str) -> None:
    pairs = [sandbox.pair(addresses=False) for _ in range(3)]
    monkeypatch.setattr(agent_module, "Datapath", CountingDatapath)
    CountingDatapath.compiles = 0
    first = threading.Event()
    out = Lines(lambda n: first.set())
    err = io.StringIO()

    def traffic() -> None:
        if not first.wait(120):
            return
        # a different workload on each: recv only, send only, both ways twice
        send_frames(pairs[0].ns_b, pairs[0].dev_b, FRAMES)
        send_frames(pairs[1].ns_a, pairs[1].dev_a, FRAMES)
        for _ in range(2):
            send_frames(pairs[2].ns_b, pairs[2].dev_b, FRAMES)
            send_frames(pairs[2].ns_a, pairs[2].dev_a, FRAMES)

    t = threading.Thread(target=traffic)
    t.start()
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err  # type: ignore[assignment]
    try:
        rc = main(["attach", *(key(p) for p in pairs), "--json", "--count", "25", "--interval", "0.2",
                   "--pin-dir", pin_dir])
    finally:
        sys.stdout, sys.stderr = saved
        first.set()
        t.join()
    assert rc == 0, err.getvalue()
    assert CountingDatapath.compiles == 1
    last = [json.loads(ln) for ln in out.getvalue().splitlines()][-1]["interfaces"]
    assert set(last) == {key(p) for p in pairs}
    want = [(RECV_B, RECV_P), (SEND_B, SEND_P), (RECV_B + SEND_B + RECV_B + SEND_B, RECV_P + SEND_P + RECV_P + SEND_P)]
    for p, (b, pk) in zip(pairs, want, strict=True):
        assert nonzero(last[key(p)]["bytes"]) == b, key(p)
        assert nonzero(last[key(p)]["packets"]) == pk, key(p)
        assert last[key(p)]["netns"] == p.ns_a and last[key(p)]["interface"] == p.dev_a
    for p in pairs:
        assert leftovers(p.ns_a, p.dev_a, pin_dir) == []


def test_programs_are_loaded_once_per_namespace(sandbox: Sandbox) -> None:
    """Two interfaces in one namespace and one in another: 2 x 2 TC programs, not 3 x 2."""
    one, two = sandbox.pair(addresses=False), sandbox.pair(addresses=False)
    sh(f"ip link add tcfc netns {one.ns_a} type veth peer name tcfd netns {one.ns_b}")
    with Datapath() as dp:
        ag = Agent(Settings(ingress="tc"), datapath=dp)
        ag.start([Target(Where(one.ns_a), (one.dev_a, "tcfc")), Target(Where(two.ns_a), (two.dev_a,))])
        try:
            assert dp.programs_loaded == 4
            assert len(ag.snapshot().interfaces) == 3
        finally:
            ag.close()
        assert dp.programs_loaded == 0  # a borrowed datapath keeps no program of a closed agent
    for p in (one, two):
        assert leftovers(p.ns_a, p.dev_a) == []


def test_a_deleted_namespace_is_let_go_and_the_others_keep_counting(sandbox: Sandbox, pin_env: dict[str, str]) -> None:
    gone, stays = sandbox.pair(addresses=False), sandbox.pair(addresses=False)
    live = Live("attach", key(gone), key(stays), "--json", "--interval", "0.2", env=pin_env)
    try:
        live.next()
        sh(f"ip netns del {gone.ns_a}")
        live.until(lambda s: key(gone) not in s["interfaces"])
        send_frames(stays.ns_b, stays.dev_b, FRAMES)
        live.until(lambda s: nonzero(s["interfaces"][key(stays)]["bytes"]) == RECV_B)
        live.signal(signal.SIGTERM)
        live.rest()
        assert live.p.returncode == 0
        assert f"network namespace {gone.ns_a} was deleted" in live.stderr()
    finally:
        live.kill()
    assert leftovers(stays.ns_a, stays.dev_a) == []


def test_detach_takes_netns_slash_iface(silent_pair: VethPair, pin_env: dict[str, str]) -> None:
    p = silent_pair
    live = Live("attach", key(p), "--json", env=pin_env)
    live.next()
    live.p.send_signal(signal.SIGKILL)  # leaves the programs attached
    live.p.wait()
    again = run("attach", key(p), "--count", "1", env=pin_env)
    assert again.returncode == 1 and f"`tcflow detach {key(p)}` removes it" in again.stderr
    r = run("detach", key(p), env=pin_env)
    assert r.returncode == 0 and f"detached {key(p)}" in r.stdout, r.stderr
    assert leftovers(p.ns_a, p.dev_a) == []  # the clsact qdisc too: the journal says it was tcflow's
