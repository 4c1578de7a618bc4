"""The capabilities each mode needs, measured: engine/privileges.py's table
is exact. Each mode runs as root with exactly its set (as the systemd unit
and the DaemonSet grant it) and works; without any one of them the kernel
refuses the mode, and tcflow's own check names the one missing.
(--containers is measured against a real Docker in test_containers.py.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Sequence

from tcflow.engine.privileges import UNSET, Mode, bpf_gated, grant, needs
from tcflow.host.sandbox import Sandbox
from tests.support.caps import measure, setpriv, tcflow
from tests.support.cli import REPO, leftovers
from tests.support.serve import free_port


def _attached(p: subprocess.CompletedProcess, key: str) -> bool:
    if p.returncode != 0:
        return False
    lines = p.stdout.strip().splitlines()
    return bool(lines) and key in json.loads(lines[-1])["interfaces"]


def test_attach_in_its_own_namespace_needs_bpf_perfmon_and_net_admin(sandbox: Sandbox) -> None:
    pair = sandbox.pair(addresses=False)
    caps = grant(needs(Mode(load=True)))
    assert caps == ["CAP_NET_ADMIN", "CAP_PERFMON", "CAP_BPF"]

    def run(c: Sequence[str], checked: bool) -> subprocess.CompletedProcess:
        return tcflow(c, "attach", pair.dev_a, "--count", "2", "--interval", "0.2", "--json", "--flows",
                      netns=pair.ns_a, checked=checked)

    assert measure(caps, run, lambda p: _attached(p, pair.dev_a)) == []
    assert leftovers(pair.ns_a, pair.dev_a) == []


def test_another_namespace_needs_sys_admin_which_covers_bpf_and_perfmon(sandbox: Sandbox) -> None:
    pair = sandbox.pair(addresses=False)
    caps = grant(needs(Mode(load=True, netns=True)))
    assert caps == ["CAP_NET_ADMIN", "CAP_SYS_ADMIN"]
    key = f"{pair.ns_a}/{pair.dev_a}"

    def run(c: Sequence[str], checked: bool) -> subprocess.CompletedProcess:
        return tcflow(c, "attach", key, "--count", "2", "--interval", "0.2", "--json", checked=checked)

    assert measure(caps, run, lambda p: _attached(p, key)) == []
    assert leftovers(pair.ns_a, pair.dev_a) == []


def test_a_process_namespace_also_needs_sys_ptrace(sandbox: Sandbox) -> None:
    """The process runs as root with every capability, as a container's
    processes have capabilities tcflow's set does not: opening its
    /proc/PID/ns/net is a ptrace access check."""
    pair = sandbox.pair(addresses=False)
    sleeper = subprocess.Popen(["ip", "netns", "exec", pair.ns_b, "sleep", "300"])
    try:
        time.sleep(0.3)
        caps = grant(needs(Mode(load=True, netns=True, proc=True)))
        assert caps == ["CAP_NET_ADMIN", "CAP_SYS_PTRACE", "CAP_SYS_ADMIN"]
        key = f"pid:{sleeper.pid}/{pair.dev_b}"

        def run(c: Sequence[str], checked: bool) -> subprocess.CompletedProcess:
            return tcflow(c, "attach", key, "--count", "2", "--interval", "0.2", "--json", checked=checked)

        assert measure(caps, run, lambda p: _attached(p, key)) == []
    finally:
        sleeper.kill()
        sleeper.wait()
    assert leftovers(pair.ns_a, pair.dev_a) == []


def test_pinning_show_and_detach_need_nothing_more_where_bpffs_is_mounted(sandbox: Sandbox, pin_dir: str) -> None:
    pair = sandbox.pair(addresses=False)
    own = grant(needs(Mode(load=True)))
    p = tcflow(own, "attach", "--pin", "--pin-dir", pin_dir, pair.dev_a, "--count", "1", "--json", netns=pair.ns_a)
    assert _attached(p, pair.dev_a), p.stderr
    # show reads the pins: no capability since Linux 6.5, CAP_BPF before
    show = grant(needs(Mode()))
    assert show == (["CAP_BPF"] if bpf_gated() else [])
    assert measure(show, lambda c, checked: tcflow(c, "show", "--pin-dir", pin_dir, "--json", checked=checked),
                   lambda r: _attached(r, pair.dev_a)) == []
    # detach removes filters: CAP_NET_ADMIN; the kernel refuses without it, and the pins stay
    unhook = grant(needs(Mode(unhook=True)))
    assert unhook == ["CAP_NET_ADMIN", *show]
    fewer = [c for c in unhook if c != "CAP_NET_ADMIN"]
    refused = tcflow(fewer, "detach", "--all", "--pin-dir", pin_dir, netns=pair.ns_a, checked=False)
    assert refused.returncode != 0 and os.path.isdir(pin_dir), refused
    checked = tcflow(fewer, "detach", "--all", "--pin-dir", pin_dir, netns=pair.ns_a)
    assert checked.returncode == 1 and "CAP_NET_ADMIN" in checked.stderr and os.path.isdir(pin_dir), checked
    done = tcflow(unhook, "detach", "--all", "--pin-dir", pin_dir, netns=pair.ns_a)
    assert done.returncode == 0, done.stderr
    assert leftovers(pair.ns_a, pair.dev_a, pin_dir) == []


def _serve(caps: Sequence[str], checked: bool, ns: str, dev: str) -> subprocess.CompletedProcess:
    """`serve` in ``ns``; works when /healthz answers 200 through its front."""
    port = free_port()
    env = dict(os.environ, **{UNSET: "0" if checked else "1"})
    p = subprocess.Popen(["nsenter", f"--net=/run/netns/{ns}", *setpriv(caps), sys.executable, "-m", "tcflow",
                          "serve", dev, "--listen", f"127.0.0.1:{port}"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, cwd=REPO, env=env)
    code = "import urllib.request as u; print(u.urlopen('http://127.0.0.1:%d/healthz', timeout=2).status)" % port
    status = ""
    try:
        end = time.monotonic() + 60
        while time.monotonic() < end and p.poll() is None and status != "200":
            time.sleep(0.3)
            got = subprocess.run(["nsenter", f"--net=/run/netns/{ns}", sys.executable, "-c", code],
                                 capture_output=True, text=True)
            status = got.stdout.strip()
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=30)
    return subprocess.CompletedProcess(p.args, 0 if status == "200" and p.returncode == 0 else p.returncode or 1,
                                       out, err)


def test_serve_needs_what_its_unprivileged_front_is_made_with(sandbox: Sandbox) -> None:
    pair = sandbox.pair(addresses=False)
    sandbox_lo = subprocess.run(["ip", "-n", pair.ns_a, "link", "set", "lo", "up"])
    assert sandbox_lo.returncode == 0
    caps = grant(needs(Mode(load=True, front=True)))
    assert caps == ["CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_NET_ADMIN", "CAP_PERFMON", "CAP_BPF"]
    assert measure(caps, lambda c, checked: _serve(c, checked, pair.ns_a, pair.dev_a),
                   lambda p: p.returncode == 0) == []
    assert leftovers(pair.ns_a, pair.dev_a) == []
