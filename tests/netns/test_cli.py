"""The command line against test namespaces: exact counts, --pin, detach, errors.

Counts are compared with the reference classifier (SPEC) over crafted frames
on a silent veth, where nothing but the injected frames crosses the link.
Every test that attaches checks that nothing is left afterwards.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Callable

import pytest

from tcflow.cli.main import main
from tcflow.host.sandbox import Sandbox, VethPair
from tcflow.model.classes import NAMES
from tests.support.cli import REPO, Live, leftovers, nonzero, one_line_error, run, settled_show
from tests.support.counting import FRAMES, RECV_B, RECV_P, SEND_B, SEND_P, both_ways, key
from tests.support.shell import FOREIGN, foreign_bpf, sh
from tests.support.tools import require
from tests.traffic_gen.frames import send_frames

# -- attach --json: SPEC's exact counts ------------------------------------------

@pytest.mark.parametrize("ingress", ["xdp", "tc"])
def test_attach_json_subprocess_exact_counts_and_clean_exit(silent_pair: VethPair, pin_env: dict[str, str],
                                                            ingress: str) -> None:
    p = silent_pair
    live = Live("attach", "--netns", p.ns_a, p.dev_a, "--json", "--interval", "0.2", "--ingress", ingress,
                env=pin_env)
    try:
        first = live.next()
        ic = first["interfaces"][key(p)]
        assert set(ic["bytes"]) == set(ic["packets"]) == set(NAMES)  # every class by name, the 14 among them
        assert not any(ic["bytes"].values()) and not any(ic["packets"].values())  # zeros at once
        assert ic["hook"]["ingress"] == ingress and ic["hook"]["egress"] == "tc"
        both_ways(p)
        want = RECV_B + SEND_B
        live.until(lambda s: nonzero(s["interfaces"][key(p)]["bytes"]) == want)
        live.signal(signal.SIGTERM)
        rest = live.rest()
        assert live.p.returncode == 0
        final = rest[-1]["interfaces"][key(p)]
        assert nonzero(final["bytes"]) == want
        assert nonzero(final["packets"]) == RECV_P + SEND_P
    finally:
        live.kill()
    assert leftovers(p.ns_a, p.dev_a, pin_env["TCFLOW_PIN_DIR"]) == []


def test_attach_json_count_in_process(silent_pair: VethPair, pin_dir: str) -> None:
    """main() in this process: --count N stops after N snapshots, values cumulative."""
    p = silent_pair
    out = _Lines()
    started, quit_ = threading.Event(), threading.Event()
    out.on_first = started.set
    err = io.StringIO()

    def traffic() -> None:
        if started.wait(60) and not quit_.is_set():
            both_ways(p)

    t = threading.Thread(target=traffic)
    t.start()
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err  # type: ignore[assignment]
    try:
        rc = main(["attach", "--netns", p.ns_a, p.dev_a, "--json", "--count", "15", "--interval", "0.2",
                   "--pin-dir", pin_dir])
    finally:
        sys.stdout, sys.stderr = saved
        quit_.set()
        started.set()
        t.join()
    assert rc == 0, err.getvalue()
    snaps = out.json()
    assert len(snaps) == 15
    last = snaps[-1]["interfaces"][key(p)]
    assert nonzero(last["bytes"]) == RECV_B + SEND_B
    assert nonzero(last["packets"]) == RECV_P + SEND_P
    for earlier, later in zip(snaps, snaps[1:], strict=False):  # cumulative: never goes down
        a, b = earlier["interfaces"][key(p)]["bytes"], later["interfaces"][key(p)]["bytes"]
        assert all(b[n] >= a[n] for n in a)
    assert leftovers(p.ns_a, p.dev_a, pin_dir) == []


class _Lines(io.StringIO):
    on_first: Callable[[], None] = staticmethod(lambda: None)

    def write(self, s: str) -> int:
        n = super().write(s)
        if "\n" in s:
            self.on_first()
        return n

    def isatty(self) -> bool:
        return False

    def json(self) -> list[dict[str, Any]]:
        import json

        return [json.loads(ln) for ln in self.getvalue().splitlines() if ln.strip()]


def test_sigint_prints_a_last_snapshot_then_detaches(silent_pair: VethPair, pin_env: dict[str, str]) -> None:
    p = silent_pair
    live = Live("attach", "--netns", p.ns_a, p.dev_a, "--json", "--interval", "30", env=pin_env)
    try:
        live.next()
        send_frames(p.ns_a, p.dev_a, FRAMES)
        time.sleep(0.5)  # the interval is 30 s: only the signal can print the counts
        live.signal(signal.SIGINT)
        rest = live.rest()
        assert live.p.returncode == 0
        assert len(rest) == 1 and nonzero(rest[0]["interfaces"][key(p)]["bytes"]) == SEND_B
    finally:
        live.kill()
    assert leftovers(p.ns_a, p.dev_a, pin_env["TCFLOW_PIN_DIR"]) == []


def test_table_output_when_not_a_terminal(silent_pair: VethPair, pin_env: dict[str, str]) -> None:
    p = silent_pair
    r = run("attach", "--netns", p.ns_a, p.dev_a, "--count", "2", "--interval", "0.1", env=pin_env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count(f"{key(p)} (ifindex") == 2 and "TCP payload sent" in r.stdout
    assert all(len(line) <= 80 for line in r.stdout.splitlines())
    assert "recv: tc" in r.stdout  # a veth: the default is clsact, not native XDP
    assert leftovers(p.ns_a, p.dev_a) == []


def test_native_xdp_on_a_veth_gives_the_notice(silent_pair: VethPair, pin_env: dict[str, str]) -> None:
    p = silent_pair
    r = run("attach", "--netns", p.ns_a, p.dev_a, "--count", "1", "--ingress", "xdp", "--xdp-mode", "native",
            "--json", env=pin_env)
    assert r.returncode == 0, r.stderr
    assert "native XDP on veth" in r.stderr and "--ingress tc" in r.stderr and "Gbit/s" in r.stderr
    r = run("attach", "--netns", p.ns_a, p.dev_a, "--count", "1", "--json", env=pin_env)
    assert "native XDP on veth" not in r.stderr


# -- --match / --follow ----------------------------------------------------------------

def test_follow_attaches_new_matches_and_drops_gone_ones(make_netns: Callable[[], str],
                                                         pin_env: dict[str, str]) -> None:
    ns_a, ns_b = make_netns(), make_netns()
    live = Live("attach", "--netns", ns_a, "--match", "tcfx*", "--follow", "--json", "--interval", "0.2",
                env=pin_env)
    try:
        assert live.next()["interfaces"] == {}  # nothing matches yet; --follow waits
        sh(f"ip link add tcfx0 netns {ns_a} type veth peer name tcfy0 netns {ns_b}")
        for ns, dev in ((ns_a, "tcfx0"), (ns_b, "tcfy0")):
            sh(f"ip netns exec {ns} sysctl -qw net.ipv6.conf.{dev}.disable_ipv6=1")
            sh(f"ip -n {ns} link set {dev} up")
        k = f"{ns_a}/tcfx0"
        live.until(lambda s: k in s["interfaces"])
        send_frames(ns_b, "tcfy0", FRAMES)
        live.until(lambda s: nonzero(s["interfaces"][k]["bytes"]) == RECV_B)
        sh(f"ip -n {ns_a} link del tcfx0")
        live.until(lambda s: k not in s["interfaces"])
        live.signal(signal.SIGTERM)
        live.rest()
        assert live.p.returncode == 0
        assert "tcfx0" in live.stderr() and "disappeared" in live.stderr()
    finally:
        live.kill()


def test_follow_ignores_the_transient_veth_a_runtime_moves_away(make_netns: Callable[[], str],
                                                                pin_env: dict[str, str]) -> None:
    """What Docker does to wire a container: a veth pair made (both ends down),
    one end moved into the container's namespace at once, the other brought
    up. Only the end that stays is hooked; nothing is reported gone."""
    host, container = make_netns(), make_netns()
    live = Live("attach", "--netns", host, "--match", "tcfv*", "--follow", "--json", "--interval", "0.2", env=pin_env)
    try:
        assert live.next()["interfaces"] == {}
        sh(f"ip -n {host} link add tcfv0 type veth peer name tcfv1")
        sh(f"ip -n {host} link set tcfv1 netns {container}")
        sh(f"ip -n {host} link set tcfv0 up")
        snap = live.until(lambda s: f"{host}/tcfv0" in s["interfaces"])
        assert set(snap["interfaces"]) == {f"{host}/tcfv0"}
        for _ in range(3):
            assert set(live.next()["interfaces"]) == {f"{host}/tcfv0"}
        live.signal(signal.SIGTERM)
        live.rest()
        assert "disappeared" not in live.stderr() and "could not attach" not in live.stderr(), live.stderr()
    finally:
        live.kill()


def test_lost_interface_is_reported_and_others_keep_counting(sandbox: Sandbox, pin_env: dict[str, str]) -> None:
    """An interface deleted while attached: tcflow carries on with the rest."""
    one = sandbox.pair(addresses=False)
    sh(f"ip link add tcfc netns {one.ns_a} type veth peer name tcfd netns {one.ns_b}")
    sh(f"ip -n {one.ns_a} link set tcfc up")
    live = Live("attach", "--netns", one.ns_a, one.dev_a, "tcfc", "--json", "--interval", "0.2", env=pin_env)
    try:
        live.next()
        sh(f"ip -n {one.ns_a} link del tcfc")
        live.until(lambda s: f"{one.ns_a}/tcfc" not in s["interfaces"])
        send_frames(one.ns_b, one.dev_b, FRAMES)
        live.until(lambda s: nonzero(s["interfaces"][key(one)]["bytes"]) == RECV_B)
        live.signal(signal.SIGTERM)
        live.rest()
        assert "tcfc" in live.stderr() and "disappeared" in live.stderr()
    finally:
        live.kill()
    assert leftovers(one.ns_a, one.dev_a) == []


# -- --pin, kill -9, show, status, detach ----------------------------------------------

@pytest.mark.parametrize("ingress", ["xdp", "tc"])
def test_pin_survives_kill_9_show_reads_restart_adopts_detach_all_cleans(
        silent_pair: VethPair, pin_env: dict[str, str], pin_dir: str, ingress: str) -> None:
    p = silent_pair
    live = Live("attach", "--pin", "--netns", p.ns_a, p.dev_a, "--json", "--ingress", ingress, env=pin_env)
    try:
        live.next()
        live.p.send_signal(signal.SIGKILL)
        live.p.wait()
    finally:
        live.kill()
    # tcflow is gone; its programs keep counting into the pinned maps
    both_ways(p)
    shown = settled_show(pin_env, key(p))
    assert nonzero(shown["bytes"]) == RECV_B + SEND_B
    assert nonzero(shown["packets"]) == RECV_P + SEND_P
    assert shown["hook"]["ingress"] == ingress and shown["hook"]["pinned"] is True
    # the library reads the same, without bcc
    import tcflow

    via_api = tcflow.counters(pin_dir).interfaces[key(p)]
    assert dict(via_api.bytes) == shown["bytes"] and dict(via_api.packets) == shown["packets"]
    assert via_api.hooks.pinned is True

    st = run("status", "--json", env=pin_env)
    import json

    rows = [a for a in json.loads(st.stdout)["attached"] if a["netns"] == p.ns_a]
    assert len(rows) == 1 and rows[0]["pinned"] and rows[0]["complete"] and not rows[0]["by_pid_running"]

    # start again: it adopts, the counters carry on, nothing is attached twice
    live = Live("attach", "--pin", "--netns", p.ns_a, p.dev_a, "--json", "--ingress", ingress,
                "--interval", "0.2", env=pin_env)
    try:
        again = live.next()["interfaces"][key(p)]
        assert nonzero(again["bytes"]) == RECV_B + SEND_B  # no reset
        send_frames(p.ns_a, p.dev_a, FRAMES)
        live.until(lambda s: nonzero(s["interfaces"][key(p)]["bytes"]) == RECV_B + SEND_B + SEND_B)
        live.signal(signal.SIGTERM)
        live.rest()
        assert live.p.returncode == 0
    finally:
        live.kill()
    for hook in ("ingress", "egress"):
        filt = sh(f"tc -n {p.ns_a} filter show dev {p.dev_a} {hook}")
        assert filt.count("handle 0x7cf1") == (1 if hook == "egress" or ingress == "tc" else 0)

    r = run("detach", "--all", env=pin_env)
    assert r.returncode == 0, r.stderr
    assert f"detached {p.ns_a}/{p.dev_a}" in r.stdout
    assert leftovers(p.ns_a, p.dev_a, pin_dir) == []


def test_detach_named_interface_and_status_sees_other_programs(silent_pair: VethPair, pin_env: dict[str, str],
                                                               pin_dir: str) -> None:
    p = silent_pair
    _foreign_filter(p, FOREIGN, b"foreign", "ffff:fff3", prio=5)
    r = run("attach", "--pin", "--netns", p.ns_a, p.dev_a, "--count", "1", "--json", env=pin_env)
    assert r.returncode == 0, r.stderr
    st = run("status", env=pin_env)
    assert p.dev_a in st.stdout and "yes" in st.stdout
    assert "other programs on the same hooks" in st.stdout and "foreign" in st.stdout
    r = run("detach", "--netns", p.ns_a, p.dev_a, env=pin_env)
    assert r.returncode == 0, r.stderr
    assert "detached" in r.stdout and not os.path.exists(pin_dir)
    assert "foreign" in sh(f"tc -n {p.ns_a} filter show dev {p.dev_a} egress")  # theirs stays
    assert "tcflow" not in sh(f"tc -n {p.ns_a} filter show dev {p.dev_a} egress")
    r = run("detach", "--netns", p.ns_a, p.dev_a, env=pin_env)
    assert r.returncode == 1 and "tcflow is not attached here" in r.stderr


def test_detach_removes_what_a_killed_unpinned_tcflow_left(silent_pair: VethPair, pin_env: dict[str, str]) -> None:
    p = silent_pair
    live = Live("attach", "--netns", p.ns_a, p.dev_a, "--json", env=pin_env)
    live.next()
    live.p.send_signal(signal.SIGKILL)
    live.p.wait()
    assert leftovers(p.ns_a, p.dev_a) != []
    st = run("status", env=pin_env)
    assert "nobody" in st.stdout and "left by a tcflow that was killed" in st.stdout
    again = run("attach", "--netns", p.ns_a, p.dev_a, "--count", "1", env=pin_env)
    assert again.returncode == 1 and "already has tcflow attached" in again.stderr
    r = run("detach", "--netns", p.ns_a, p.dev_a, env=pin_env)
    assert r.returncode == 0, r.stderr
    assert leftovers(p.ns_a, p.dev_a) == []  # the clsact qdisc too: the journal says it was tcflow's


def _foreign_filter(p: VethPair, src: str, fn: bytes, parent: str, prio: int) -> Any:
    from bcc import BPF
    from pyroute2 import IPRoute

    from tcflow.system import netns as tns

    prog = foreign_bpf(src).load_func(fn, BPF.SCHED_CLS)
    with IPRoute(netns=tns.resolve(p.ns_a).path, flags=0) as ipr:
        idx = ipr.link_lookup(ifname=p.dev_a)[0]
        try:
            ipr.tc("add", "clsact", idx)
        except Exception:
            pass
        ipr.tc("add-filter", "bpf", idx, 1, fd=prog.fd, name=fn.decode(), parent=parent, prio=prio,
               direct_action=True)
    return prog


# -- errors: one line, non-zero, nothing left -------------------------------------------------

def test_error_unknown_interface(silent_pair: VethPair, pin_env: dict[str, str]) -> None:
    p = silent_pair
    r = run("attach", "--netns", p.ns_a, p.dev_a, "tcf-nope", env=pin_env)
    one_line_error(r, "no such interface", "tcf-nope", f"list them with `ip -n {p.ns_a} link`")
    assert leftovers(p.ns_a, p.dev_a, pin_env["TCFLOW_PIN_DIR"]) == []
    r = run("--debug", "attach", "--netns", p.ns_a, "tcf-nope", env=pin_env)
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_error_unknown_namespace_and_pid(pin_env: dict[str, str]) -> None:
    one_line_error(run("attach", "--netns", "tcft-nope", "eth0", env=pin_env), "no such network namespace",
                    "ip netns list")
    assert "tcft-nope" not in sh("ip netns list")
    one_line_error(run("attach", "--pid", "999999999", "eth0", env=pin_env), "no such process", "ps")
    assert not os.path.exists(pin_env["TCFLOW_PIN_DIR"])


@pytest.mark.parametrize("how", ["nobody", "no-capabilities"])
def test_error_not_root(silent_pair: VethPair, pin_env: dict[str, str], how: str) -> None:
    p = silent_pair
    prefix = (("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups") if how == "nobody"
              else ("setpriv", "--bounding-set=-all", "--inh-caps=-all"))
    if how == "nobody":  # a user is told to use sudo, whatever the command
        for args in (("attach", "--netns", p.ns_a, p.dev_a), ("attach", "--pin", "--netns", p.ns_a, p.dev_a),
                     ("detach", "--all"), ("status",), ("show",)):
            one_line_error(run(*args, env=pin_env, prefix=prefix), "needs root", "sudo")
    else:  # root without capabilities is told which ones (show and status need none since Linux 6.5)
        for args, cap in ((("attach", "--netns", p.ns_a, p.dev_a), "CAP_SYS_ADMIN"),
                          (("attach", "--pin", "--netns", p.ns_a, p.dev_a), "CAP_NET_ADMIN"),
                          (("detach", "--all"), "CAP_NET_ADMIN")):
            one_line_error(run(*args, env=pin_env, prefix=prefix), "tcflow lacks ", cap, "grant")
    assert leftovers(p.ns_a, p.dev_a, pin_env["TCFLOW_PIN_DIR"]) == []


def test_error_foreign_xdp_program_refused_unless_tc(silent_pair: VethPair, pin_env: dict[str, str]) -> None:
    from bcc import BPF
    from pyroute2 import IPRoute

    from tcflow.system import netns as tns

    p = silent_pair
    src = "int other_xdp(struct xdp_md *ctx) { return XDP_PASS; }"
    prog = foreign_bpf(src).load_func(b"other_xdp", BPF.XDP)
    with IPRoute(netns=tns.resolve(p.ns_a).path, flags=0) as ipr:
        idx = ipr.link_lookup(ifname=p.dev_a)[0]
        ipr.link("set", index=idx, xdp={"attrs": [("IFLA_XDP_FD", prog.fd), ("IFLA_XDP_FLAGS", 1 << 1)]})
    r = run("attach", "--netns", p.ns_a, p.dev_a, "--ingress", "xdp", env=pin_env)
    one_line_error(r, "already has an XDP program", "other_xdp", "--ingress tc")
    assert [x for x in leftovers(p.ns_a, p.dev_a) if x != "an XDP program"] == []
    assert "other_xdp" in sh(f"ip -n {p.ns_a} -d link show {p.dev_a}") or "xdpgeneric" in \
        sh(f"ip -n {p.ns_a} link show {p.dev_a}")
    # on clsact ingress, tcflow and the other XDP program coexist
    r = run("attach", "--netns", p.ns_a, p.dev_a, "--ingress", "tc", "--count", "1", "--json", env=pin_env)
    assert r.returncode == 0, r.stderr
    assert "xdpgeneric" in sh(f"ip -n {p.ns_a} link show {p.dev_a}")


def test_error_bcc_missing(silent_pair: VethPair, pin_env: dict[str, str], tmp_path: Any) -> None:
    """A Python that cannot import bcc: a package named bcc that fails to import first on the path."""
    p = silent_pair
    shim = tmp_path / "bcc"
    shim.mkdir()
    (shim / "__init__.py").write_text("raise ImportError('No module named bcc (test shim)')\n")
    pin_env = dict(pin_env, PYTHONPATH=str(tmp_path))
    r = run("attach", "--netns", p.ns_a, p.dev_a, env=pin_env)
    one_line_error(r, "cannot import bcc", "python3-bpfcc")
    assert leftovers(p.ns_a, p.dev_a, pin_env["TCFLOW_PIN_DIR"]) == []
    doc = run("doctor", env=pin_env)
    assert doc.returncode == 1 and "FAIL" in doc.stdout and "python3-bpfcc" in doc.stdout


def test_error_kernel_headers_missing(silent_pair: VethPair, pin_env: dict[str, str], tmp_path: Any) -> None:
    p = silent_pair
    r = run("attach", "--netns", p.ns_a, p.dev_a, env=dict(pin_env, BCC_KERNEL_SOURCE="/nonexistent/tcflow-test"))
    one_line_error(r, "BCC_KERNEL_SOURCE=/nonexistent/tcflow-test is not a directory")
    assert leftovers(p.ns_a, p.dev_a, pin_env["TCFLOW_PIN_DIR"]) == []
    # no headers anywhere: a private mount namespace hides /usr/src and /lib/modules
    if os.path.exists("/sys/kernel/kheaders.tar.xz"):
        pytest.skip("this kernel carries its own headers (CONFIG_IKHEADERS)")
    hide = ("unshare", "-m", "--propagation", "private", "sh", "-c",
            'mount -t tmpfs none /usr/src && mount -t tmpfs none /lib/modules && exec "$@"', "-")
    env2 = {k: v for k, v in pin_env.items() if k != "BCC_KERNEL_SOURCE"}
    env2["TCFLOW_CACHE_DIR"] = str(tmp_path / "cache")
    r = run("attach", "--netns", p.ns_a, p.dev_a, env=env2, prefix=hide)
    one_line_error(r, "no kernel headers", "linux-headers")
    assert leftovers(p.ns_a, p.dev_a, pin_env["TCFLOW_PIN_DIR"]) == []
    doc = run("doctor", env=env2, prefix=hide)
    assert doc.returncode == 1 and "linux-headers" in doc.stdout


def test_doctor_passes_here() -> None:
    r = run("doctor")
    assert r.returncode == 0, r.stdout + r.stderr
    for item in ("root", "bpf()", "bcc", "kernel headers", "compile", "clsact", "XDP"):
        assert item in r.stdout


# -- pipes and full disks ----------------------------------------------------------------

def test_a_closed_pipe_ends_tcflow_quietly_after_detaching(silent_pair: VethPair, pin_env: dict[str, str]) -> None:
    """`tcflow attach --json | head -1`: exit 0, nothing on stderr, nothing left attached."""
    p = silent_pair
    proc = subprocess.Popen([sys.executable, "-m", "tcflow", "attach", key(p), "--json", "--interval", "0.1"],
                            cwd=REPO, env=pin_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().startswith(b"{")
    proc.stdout.close()  # what head does after its line
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and err == b"", err
    assert leftovers(p.ns_a, p.dev_a) == []


def test_a_full_stdout_is_a_one_line_error(silent_pair: VethPair, pin_env: dict[str, str]) -> None:
    p = silent_pair
    with open("/dev/full", "w") as full:
        r = subprocess.run([sys.executable, "-m", "tcflow", "attach", key(p), "--json", "--count", "1"], cwd=REPO,
                           env=pin_env, stdout=full, stderr=subprocess.PIPE, text=True, timeout=120)
    one_line_error(r, "cannot write to standard output: No space left on device")
    assert leftovers(p.ns_a, p.dev_a) == []


def test_an_unwritable_header_cache_is_a_one_line_error_and_a_doctor_finding(silent_pair: VethPair,
                                                                               pin_env: dict[str, str]) -> None:
    if os.path.exists("/sys/kernel/kheaders.tar.xz") or os.path.exists(f"/lib/modules/{os.uname().release}/build"):
        pytest.skip("this kernel has its own headers: tcflow makes no header cache here")
    pin_env = dict(pin_env, TCFLOW_CACHE_DIR="/proc/tcflow-cannot-exist/cache")
    one_line_error(run("attach", key(silent_pair), "--count", "1", env=pin_env), "cannot write the kernel-header cache")
    doc = run("doctor", env=pin_env)
    assert doc.returncode == 1 and "cannot write the kernel-header cache" in doc.stdout, doc.stdout + doc.stderr
    assert "Traceback" not in doc.stderr and "please report" not in doc.stderr
    assert leftovers(silent_pair.ns_a, silent_pair.dev_a) == []


def test_a_full_header_cache_disk_is_one_line_and_leaves_no_half_tree(silent_pair: VethPair, pin_env: dict[str, str],
                                                                        tmp_path: Any) -> None:
    if os.path.exists("/sys/kernel/kheaders.tar.xz") or os.path.exists(f"/lib/modules/{os.uname().release}/build"):
        pytest.skip("this kernel has its own headers: tcflow makes no header cache here")
    full = tmp_path / "full"
    full.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,nr_inodes=40,mode=0755", "tcft", str(full)], check=True)
    try:
        r = run("attach", key(silent_pair), "--count", "1", env=dict(pin_env, TCFLOW_CACHE_DIR=str(full)))
        one_line_error(r, "cannot write the kernel-header cache", "No space left on device")
        assert [str(p) for p in full.rglob("*.tmp*")] == []
    finally:
        subprocess.run(["umount", str(full)], check=False)
    assert leftovers(silent_pair.ns_a, silent_pair.dev_a) == []


# -- the live view, in a real terminal -------------------------------------------------

def _tmux(*argv: str) -> str:
    return subprocess.run(["tmux", *argv], capture_output=True, text=True, errors="replace", check=True).stdout


def test_live_view_in_tmux_fits_80x24_with_50_interfaces_and_keeps_notices(sandbox: Sandbox,
                                                                            pin_env: dict[str, str]) -> None:
    require("tmux")
    ns = sandbox.netns()
    sandbox.veths(ns, 50)
    session = f"tcflow-test-{os.getpid()}"
    cmd = " ".join([sys.executable, "-m", "tcflow", "attach", "--netns", ns, "--match", "s*a", "--interval", "0.5",
                    "--units", "bits"])
    _tmux("new-session", "-d", "-s", session, "-x", "80", "-y", "24", "-e",
          f"TCFLOW_PIN_DIR={pin_env['TCFLOW_PIN_DIR']}",
          f"cd {REPO} && {cmd}; echo EXITED $?; sleep 30")
    try:
        def screen() -> list[str]:
            return _tmux("capture-pane", "-p", "-t", session).rstrip("\n").split("\n")

        end = time.monotonic() + 60
        while time.monotonic() < end and "50 interfaces" not in screen()[0]:
            time.sleep(0.2)
        lines = screen()
        assert lines[0].startswith("tcflow  ") and "50 interfaces" in lines[0], lines
        assert len(lines) <= 24 and all(len(ln) <= 80 for ln in lines)
        assert lines[2].startswith("INTERFACE") and any("more, quieter" in ln for ln in lines)
        assert "bit/s" in "\n".join(lines) or " - " in "\n".join(lines)
        sh(f"ip -n {ns} link del s7a")
        end = time.monotonic() + 30
        while time.monotonic() < end and not any("disappeared" in ln for ln in screen()):
            time.sleep(0.2)
        time.sleep(1.5)  # three redraws later the notice is still on screen
        lines = screen()
        assert lines[0].startswith("tcflow  ") and "49 interfaces" in lines[0]
        assert any(f"{ns}/s7a disappeared" in ln for ln in lines[-3:]), lines
        _tmux("send-keys", "-t", session, "C-c")
        end = time.monotonic() + 30
        while time.monotonic() < end and not any("EXITED" in ln for ln in screen()):
            time.sleep(0.2)
        after = "\n".join(screen())
        assert "EXITED 0" in after and "bit/s" in after  # the last view, every interface, on the normal screen
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
    assert leftovers(ns, "s0a") == []



def test_doctor_as_a_user_says_what_is_missing_and_exits_1() -> None:
    """Not root: every check still reports, the ones that need root say so
    with the fix; no crash, no "please report it"."""
    r = run("doctor", prefix=("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"))
    assert r.returncode == 1 and r.stderr == "", r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("tcflow doctor: kernel ")
    assert "  [FAIL] root and capabilities (attach, top, serve in its own namespace): missing " in r.stdout
    assert "fix: run tcflow with sudo" in r.stdout
    assert any(ln.startswith("  [warn] compiled-program cache: cannot read ") for ln in lines), r.stdout
    assert lines[-1] == "some checks failed or could not run: see the fixes above"
    assert "  [warn] serve's HTTP front without privilege: missing what the first check names, and CAP_SETUID (" \
        in r.stdout


def test_doctor_names_what_serves_http_front_needs() -> None:
    """Root without CAP_SETPCAP (capsh): a warning that names it and says
    serve would refuse; the required checks still pass."""
    r = subprocess.run(["capsh", "--drop=cap_setpcap", "--", "-c", f"exec {sys.executable} -m tcflow doctor"],
                       capture_output=True, text=True, cwd=REPO, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "[warn] serve's HTTP front without privilege: missing CAP_SETPCAP (serve's HTTP front empties its " \
        "bounding set)" in r.stdout, r.stdout


def test_completion_lists_the_interfaces_inside_a_namespace(make_netns: Callable[[], str], tmp_path: Any) -> None:
    """`ns1/<TAB>` completes to ns1's interfaces, in bash and in fish."""
    from tcflow.cli.completion import bash, fish
    from tcflow.cli.parser import parser

    ns = make_netns()
    sh(f"ip -n {ns} link add tcfcomp0 type veth peer name tcfcomp1")
    (tmp_path / "tcflow.bash").write_text(bash(parser()))
    (tmp_path / "tcflow.fish").write_text(fish(parser()))
    r = subprocess.run(["bash", "-c", f"source {tmp_path}/tcflow.bash; COMP_WORDS=(tcflow attach {ns}/tcfc); "
                        'COMP_CWORD=2; _tcflow; printf "%s\\n" "${COMPREPLY[@]}"'], capture_output=True, text=True)
    assert sorted(r.stdout.split()) == [f"{ns}/tcfcomp0", f"{ns}/tcfcomp1"], r.stderr
    r = subprocess.run([require("fish"), "--no-config", "-c",
                        f"source {tmp_path}/tcflow.fish; complete -C 'tcflow top {ns}/tcfc'"],
                       capture_output=True, text=True)
    assert sorted(ln.split("\t")[0] for ln in r.stdout.splitlines()) == [f"{ns}/tcfcomp0", f"{ns}/tcfcomp1"]
    r = subprocess.run(["bash", "-c", f"source {tmp_path}/tcflow.bash; COMP_WORDS=(tcflow attach {ns[:-1]}); "
                        'COMP_CWORD=2; _tcflow; printf "%s\\n" "${COMPREPLY[@]}"'], capture_output=True, text=True)
    assert f"{ns}/" in r.stdout.split()  # the namespace itself, then its interfaces
