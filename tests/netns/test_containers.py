"""--containers against a real Docker (Debian's docker.io, started here with a
data root, socket and network namespace of its own; see tests/support/docker.py).

Exact per-container counts against a pcap taken inside the container's own
namespace; names and ids in the JSON and the metrics; a `docker restart`
leaves one monotonic series; 20 containers started and stopped leave nothing.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import tempfile
import time
from collections import Counter
from typing import Any, Iterator

import pytest

from tests.conftest import PREFIX
from tests.support.cli import Live, run
from tests.support.docker import Dockerd
from tests.support.pcap import capture, drain
from tests.support.reference import classify
from tests.support.serve import Serve, parse_metrics
from tests.traffic_gen.sockets import tcp_exchange, udp_exchange

WEB_IP, DB_IP = "198.18.200.10", "198.18.200.11"


@pytest.fixture(scope="module")
def docker() -> Iterator[Dockerd]:
    d = Dockerd(PREFIX)
    try:
        d.start()
        yield d
    finally:
        d.close()


@pytest.fixture
def web_and_db(docker: Dockerd) -> Iterator[tuple[str, str]]:
    """Two running containers, web and db, with TSO/GSO off in web (so that its
    capture holds wire-sized frames), removed afterwards."""
    web, db = f"{PREFIX}web", f"{PREFIX}db"
    docker.container(web, WEB_IP)
    docker.container(db, DB_IP)
    subprocess.run(["nsenter", "-t", str(docker.pid(web)), "-n", "ethtool", "-K", "eth0", "tso", "off", "gso", "off",
                    "gro", "off"], check=True, capture_output=True)
    # A new container's kernel repeats its IGMP reports for up to a second or
    # two after it starts, and the bridge floods them to the other: let that
    # settle, so that no test counts a report that fell before its capture.
    time.sleep(2.5)
    try:
        yield web, db
    finally:
        docker.run("rm", "-f", web, db, check=False)


def _traffic(docker: Dockerd, web: str) -> None:
    """ICMP (busybox ping), then TCP and UDP both ways between web and db:
    kernel sockets opened inside the two containers' namespaces (busybox's nc
    has no UDP)."""
    db = web.replace("web", "db")
    docker.exec(web, "ping", "-c", "4", "-i", "0.2", "-s", "300", DB_IP)
    ns_web, ns_db = f"/proc/{docker.pid(web)}/ns/net", f"/proc/{docker.pid(db)}/ns/net"
    assert tcp_exchange(ns_web, ns_db, socket.AF_INET, DB_IP, 30, 10_000, 500) == (300_000, 15_000)
    udp_exchange(ns_web, ns_db, socket.AF_INET, WEB_IP, DB_IP, 5, 700, 3, 90)


def _expected(frames: dict[str, list[tuple[bytes, int]]]) -> tuple[Counter, Counter]:
    b: Counter = Counter()
    p: Counter = Counter()
    for tcpdump_dir, spec_dir in (("in", "recv"), ("out", "send")):
        for frame, orig in frames[tcpdump_dir]:
            assert len(frame) == orig, "capture cut a frame"
            fb, fp = classify(frame, spec_dir)
            b.update(fb)
            p.update(fp)
    return +b, +p


def test_each_container_is_counted_exactly_in_its_own_namespace_and_named(
        docker: Dockerd, web_and_db: tuple[str, str], pin_env: dict[str, str]) -> None:
    web, db = web_and_db
    web_id = docker.run("inspect", "-f", "{{.Id}}", web).stdout.strip()
    live = Live("attach", "--containers", "--json", "--interval", "0.3", env=pin_env)
    try:
        live.until(lambda s: f"{web}/eth0" in s["interfaces"] and f"{db}/eth0" in s["interfaces"])
        enter = ("nsenter", "-t", str(docker.pid(web)), "-n")
        with tempfile.TemporaryDirectory() as tmp:
            # one capture a direction: Docker's bridge reflects a container's
            # broadcasts back to it (hairpin), so the source address does not
            # tell which way a frame went
            caps = {d: (capture("", "eth0", os.path.join(tmp, d), direction=d, snaplen=0, bpf_filter="",
                                enter=enter), os.path.join(tmp, d)) for d in ("in", "out")}
            _traffic(docker, web)
            frames = {d: drain(cap, path) for d, (cap, path) in caps.items()}
        want_b, want_p = _expected(frames)
        assert want_b["L4_TCP_SEND_V4"] == 300_000 and want_b["L4_UDP_SEND_V4"] == 3500, (want_b, len(frames))

        def settled(s: dict[str, Any]) -> bool:
            e = s["interfaces"][f"{web}/eth0"]
            return +Counter(e["bytes"]) == want_b and +Counter(e["packets"]) == want_p

        try:
            snap = live.until(settled, timeout=20)
        except AssertionError:
            e = live.lines[-1]["interfaces"][f"{web}/eth0"]
            raise AssertionError(f"tcflow {+Counter(e['bytes'])} {+Counter(e['packets'])}; "
                                 f"pcap {want_b} {want_p}") from None
        e = snap["interfaces"][f"{web}/eth0"]
        assert e["container"] == {"container_id": web_id, "container": web, "runtime": "docker", "pod": "",
                                  "namespace": ""}
        assert e["netns"] == web and e["interface"] == "eth0"
        # db saw the other end of the same conversation
        d = snap["interfaces"][f"{db}/eth0"]
        assert d["bytes"]["L4_TCP_RECV_V4"] == 300_000 and d["container"]["container"] == db
        # status --containers: each one, its host-side veth (here in dockerd's namespace), counted
        st = run("status", "--containers", "--json", env=pin_env)
        assert st.returncode == 0, st.stderr
        rows = {c["name"]: c for c in json.loads(st.stdout)["containers"]}
        for name in (web, db):
            (eth0,) = rows[name]["interfaces"]
            assert eth0["interface"] == "eth0" and eth0["counted"] is True
            host_side = eth0["host_side"]
            assert host_side and host_side.startswith(docker.ns + "/veth"), eth0
            peer = subprocess.run(["ip", "-n", docker.ns, "-j", "link", "show", "dev", host_side.split("/")[1]],
                                  capture_output=True, text=True, check=True).stdout
            assert json.loads(peer)[0]["link_index"] == eth0["ifindex"]
        assert rows[web]["container_id"] == web_id
        table = run("status", "--containers", env=pin_env).stdout
        assert web in table and "yes" in table
    finally:
        live.kill()


def _series(metrics: str, container: str, family: str = "tcflow_ip_bytes_total") -> dict[frozenset, float]:
    return {labels: v for (name, labels), v in parse_metrics(metrics).items()
            if name == family and ("container", container) in labels}


def test_docker_restart_keeps_one_monotonic_series_and_leaves_the_others_alone(
        docker: Dockerd, web_and_db: tuple[str, str], pin_env: dict[str, str]) -> None:
    web, db = web_and_db
    srv = Serve("--containers", env=pin_env)
    try:
        def both_seen() -> bool:
            t = srv.traffic()["interfaces"]
            return f"{web}/eth0" in t and f"{db}/eth0" in t

        _wait(both_seen)
        _traffic(docker, web)
        before = _series(srv.metrics(), web)
        db_before = _series(srv.metrics(), db)
        assert sum(before.values()) > 300_000
        seen = [before]
        docker.run("restart", "-t", "1", web)
        docker.exec(web, "ping", "-c", "3", "-i", "0.2", DB_IP)
        end = time.monotonic() + 20
        while time.monotonic() < end:
            now = _series(srv.metrics(), web)
            seen.append(now)
            if now and sum(now.values()) > sum(before.values()) + 3 * 84:
                break
            time.sleep(0.2)
        # no series of web ever went down (a Prometheus resets() of 0)
        for earlier, later in zip(seen, seen[1:], strict=False):
            for labels, v in later.items():
                assert v >= earlier.get(labels, 0), (labels, earlier.get(labels), v)
        after = seen[-1]
        assert sum(after.values()) > sum(before.values())
        assert dict(after) and {k for k in after} >= {k for k, v in before.items() if v}
        # db: untouched by web's restart, only grown by the pings
        db_after = _series(srv.metrics(), db)
        assert all(db_after[k] >= v for k, v in db_before.items())
    finally:
        srv.stop()


def _wait(pred: Any, timeout: float = 20) -> None:
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            raise AssertionError("condition not met in time")
        time.sleep(0.1)


def test_20_containers_started_and_stopped_under_serve_leave_nothing(docker: Dockerd, pin_env: dict[str, str]) -> None:
    srv = Serve("--containers", env=pin_env)
    try:
        base = json.loads(srv.get("/healthz")[2])
        for i in range(20):
            name = f"{PREFIX}churn{i}"
            docker.container(name, f"198.18.200.{100 + i}")
            _wait(lambda n=name: f"{n}/eth0" in srv.traffic()["interfaces"])
            docker.run("rm", "-f", name)
            _wait(lambda n=name: f"{n}/eth0" not in srv.traffic()["interfaces"])
        health = json.loads(srv.get("/healthz")[2])
        for k in ("slots_used", "programs", "namespaces", "interfaces"):
            assert health[k] == base[k], (k, base, health)
        assert not [k for k in srv.traffic()["interfaces"] if "churn" in k]
        st = run("status", "--containers", "--json", env=pin_env)
        assert st.returncode == 0, st.stderr
        assert not [c["name"] for c in json.loads(st.stdout)["containers"] if "churn" in c["name"]]
    finally:
        err = srv.stop()
    assert "Traceback" not in err


def test_with_pin_a_restart_of_tcflow_loses_nothing_of_a_restarted_container(
        docker: Dockerd, web_and_db: tuple[str, str], pin_env: dict[str, str], pin_dir: str) -> None:
    """The running container's pinned counters are adopted; what its earlier
    life counted comes back from the carried totals tcflow wrote."""
    web, db = web_and_db
    key = f"{web}/eth0"
    srv = Serve("--containers", "--pin", env=pin_env)
    try:
        _wait(lambda: key in srv.traffic()["interfaces"])
        _traffic(docker, web)
        lived = sum(srv.traffic()["interfaces"][key]["bytes"].values())
        docker.run("restart", "-t", "1", web)
        docker.exec(web, "ping", "-c", "2", "-i", "0.2", DB_IP)
        _wait(lambda: key in (t := srv.traffic()["interfaces"]) and sum(t[key]["bytes"].values()) > lived)
        first = srv.traffic()["interfaces"][key]["bytes"]
    finally:
        srv.stop()  # --pin: left attached, counting
    shown = run("show", "--containers", "--json", env=pin_env)  # with no tcflow running
    assert shown.returncode == 0, shown.stderr
    e = json.loads(shown.stdout)["interfaces"][key]
    assert e["container"]["container"] == web and all(e["bytes"][k] >= v for k, v in first.items())
    assert f"{db}/eth0" in json.loads(shown.stdout)["interfaces"]
    srv = Serve("--containers", "--pin", env=pin_env)
    try:
        _wait(lambda: key in srv.traffic()["interfaces"])
        again = srv.traffic()["interfaces"][key]
        assert all(again["bytes"][k] >= v for k, v in first.items()), (first, again["bytes"])
        assert again["hook"]["pinned"] is True
    finally:
        srv.stop()
    r = run("detach", "--all", "--pin-dir", pin_dir, env=pin_env)
    assert r.returncode == 0, r.stderr


def _health(srv: Serve) -> dict[str, Any]:
    code, _, body = srv.get("/healthz")
    assert code == 200, body
    return json.loads(body)


def test_a_container_started_later_is_counted_from_its_first_packet(docker: Dockerd, pin_env: dict[str, str]) -> None:
    """The container pings as the first thing it does; every echo request
    and reply is counted on its own eth0, none lost to a late attach. The
    cgroup events find it: /proc is not listed for it (the listings counted
    in /healthz move only with the minute's safety-net pass)."""
    srv = Serve("--containers", env=pin_env)
    peer, early = f"{PREFIX}peer", f"{PREFIX}early"
    try:
        docker.container(peer, DB_IP)
        _wait(lambda: f"{peer}/eth0" in srv.traffic()["interfaces"])
        before = _health(srv)["discovery"]
        assert before["mode"] == "events" and before["cgroup_watch_complete"], before
        started = time.monotonic()
        for attempt in range(3):
            name = f"{early}{attempt}"
            # an address of its own: a stale neighbour entry for a reused one sends
            # the peer's replies to the old MAC, flooded to this port too
            docker.container(name, f"198.18.200.{30 + attempt}", "sh", "-c", f"ping -c 3 -i 0.2 -W 1 {DB_IP}; "
                             "sleep 3600")
            key = f"{name}/eth0"
            _wait(lambda k=key: k in (t := srv.traffic()["interfaces"]) and
                  t[k]["packets"]["L3_RAW_RECV_V4"] >= 3)
            time.sleep(0.5)
            e = srv.traffic()["interfaces"][key]
            # all three echo requests, the first included, and its ARP before them; the
            # replies at least (a bridge may flood it a frame meant for another port)
            assert e["packets"]["L3_RAW_SEND_V4"] == 3 and e["bytes"]["L3_RAW_SEND_V4"] == 3 * 84, e["packets"]
            assert e["packets"]["L3_RAW_RECV_V4"] >= 3 and e["packets"]["OTHER_SEND"] >= 1, e["packets"]
            docker.run("rm", "-f", name)
        after = _health(srv)["discovery"]
        minute_passes = int((time.monotonic() - started) // 60) + 1
        assert after["proc_listings"] - before["proc_listings"] <= minute_passes, (before, after)
        assert after["unknown_listings"] == before["unknown_listings"], (before, after)
    finally:
        srv.stop()
        docker.run("rm", "-f", peer, check=False)


def test_without_the_events_a_new_container_waits_for_the_minutes_scan(docker: Dockerd,
                                                                         pin_env: dict[str, str]) -> None:
    """The control for the test above: with the event path off
    (TCFLOW_DISCOVERY=scan: only the minute's full scan), the same container
    is not counted in its first ten seconds: that test's pass is the events'."""
    srv = Serve("--containers", env={**pin_env, "TCFLOW_DISCOVERY": "scan"})
    name = f"{PREFIX}late"
    try:
        assert _health(srv)["discovery"]["mode"] == "scan"
        docker.container(name, "198.18.200.40", "sh", "-c", f"ping -c 3 -i 0.2 -W 1 {DB_IP}; sleep 3600")
        time.sleep(10)
        assert f"{name}/eth0" not in srv.traffic()["interfaces"]
    finally:
        srv.stop()
        docker.run("rm", "-f", name, check=False)


def test_host_side_veths_name_their_containers(docker: Dockerd, web_and_db: tuple[str, str],
                                               pin_env: dict[str, str]) -> None:
    """Counting the host side (here: dockerd's namespace) with --match 'veth*':
    each veth's entry names the container at its other end."""
    web, db = web_and_db
    live = Live("attach", "--netns", docker.ns, "--match", "veth*", "--json", "--interval", "0.3", env=pin_env)
    try:
        snap = live.until(lambda s: len(s["interfaces"]) >= 2)
        named = {e["container"]["container"] for e in snap["interfaces"].values() if e["container"]}
        assert {web, db} <= named, snap["interfaces"].keys()
    finally:
        live.kill()


def test_flows_per_container_with_names(docker: Dockerd, web_and_db: tuple[str, str], pin_env: dict[str, str]) -> None:
    """--flows with --containers: each container's eth0 has its own flows, the
    TCP and UDP payloads exactly what the sockets moved; `top` names them."""
    web, db = web_and_db
    srv = Serve("--containers", "--flows", "--flows-top", "50", env=pin_env)
    try:
        _wait(lambda: {f"{web}/eth0", f"{db}/eth0"} <= set(srv.traffic()["interfaces"]))
        _traffic(docker, web)
        time.sleep(1.5)
        ifs = srv.traffic()["interfaces"]
    finally:
        srv.stop()
    for me, mine, theirs in ((web, WEB_IP, DB_IP), (db, DB_IP, WEB_IP)):
        flows = ifs[f"{me}/eth0"]["flows"]["top"]
        assert all(f["local"]["address"] == mine and f["remote"]["address"] == theirs
                   for f in flows if f["family"] == "ipv4"), (me, flows)
        tcp = [f for f in flows if f["protocol"] == "tcp"]
        udp = [f for f in flows if f["protocol"] == "udp"]
        pings = [f for f in flows if f["protocol"] == "icmp" and f["icmp_type"] == 8]
        assert len(tcp) == 1 and len(udp) == 1 and len(pings) == 1, (me, flows)
        sent, got = (300_000, 15_000) if me == web else (15_000, 300_000)
        assert (tcp[0]["payload_bytes"]["send"], tcp[0]["payload_bytes"]["recv"]) == (sent, got)
        sent, got = (5 * 700, 3 * 90) if me == web else (3 * 90, 5 * 700)
        assert (udp[0]["payload_bytes"]["send"], udp[0]["payload_bytes"]["recv"]) == (sent, got)
        assert pings[0]["packets"] == ({"recv": 0, "send": 4} if me == web else {"recv": 4, "send": 0})
    top = Live("top", "--containers", "--json", "--count", "4", "--top", "50", env=pin_env)
    try:
        top.next()
        docker.exec(web, "ping", "-c", "2", "-i", "0.2", DB_IP)
        lines = top.rest()
    finally:
        top.kill()
    named = {(f["interface"], f["protocol"]) for line in lines for f in line["flows"]}
    assert {(f"{web}/eth0", "icmp"), (f"{db}/eth0", "icmp")} <= named, named


def test_containers_need_net_admin_sys_admin_and_sys_ptrace_and_nothing_else(docker: Dockerd) -> None:
    """--containers with exactly the DaemonSet's measured set finds and
    attaches to a running container; without any one of the three it does
    not (unchecked: the kernel refuses setns, the /proc/PID/ns/net open or
    the qdisc), and tcflow's check names the missing one."""
    from tcflow.engine.privileges import Mode, grant, needs
    from tests.support.caps import measure, tcflow

    name = f"{PREFIX}caps"
    docker.container(name, "198.18.200.40")
    try:
        caps = grant(needs(Mode(load=True, netns=True, proc=True)))
        assert caps == ["CAP_NET_ADMIN", "CAP_SYS_PTRACE", "CAP_SYS_ADMIN"]

        def works(p: subprocess.CompletedProcess) -> bool:
            lines = p.stdout.strip().splitlines()
            return p.returncode == 0 and bool(lines) and f"{name}/eth0" in json.loads(lines[-1])["interfaces"]

        assert measure(caps, lambda c, checked: tcflow(c, "attach", "--containers", "--count", "3", "--interval",
                                                       "0.5", "--json", checked=checked), works) == []
    finally:
        docker.run("rm", "-f", name, check=False)
