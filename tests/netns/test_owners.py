"""No tcflow blinds another: who owns the hooks, and what each tcflow does
when someone else takes them away (issue 21, defects 1 and 2, and Ctrl-C
at start).

- `status` names the live process counting an interface; `detach` refuses
  it with that pid; `detach --force` goes ahead, and the running tcflow says
  so on stderr within about a second and stops reporting the interface.
- The same for hooks removed with `tc filter del` or `ip link set ... xdp off`.
- Pins under another --pin-dir: found by plain status and detach, removed
  with the hooks (both or neither); `show` marks an entry whose programs
  are gone.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from typing import Any, Callable

import pytest

from tcflow.host.sandbox import VethPair
from tests.support.cli import REPO, Live, leftovers, one_line_error, run
from tests.support.counting import key
from tests.support.serve import Serve
from tests.support.shell import sh


def _status(env: dict[str, str], p: VethPair, *extra: str) -> dict[str, Any]:
    r = run("status", "--json", *extra, env=env)
    assert r.returncode == 0, r.stderr
    rows = [a for a in json.loads(r.stdout)["attached"] if a["netns"] == p.ns_a and a["interface"] == p.dev_a]
    assert len(rows) <= 1
    return rows[0] if rows else {}


def _stderr_until(proc: subprocess.Popen, pred: Callable[[str], bool], timeout: float = 10) -> str:
    """Read the process's stderr until ``pred`` holds on what was read (or it exits)."""
    assert proc.stderr is not None
    os.set_blocking(proc.stderr.fileno(), False)
    text, end = "", time.monotonic() + timeout
    while time.monotonic() < end:
        chunk = proc.stderr.read()
        if chunk:
            text += chunk
            if pred(text):
                return text
        elif proc.poll() is not None:
            return text + (proc.stderr.read() or "")
        time.sleep(0.05)
    return text


def test_detach_refuses_a_live_attach_and_force_is_noticed(silent_pair: VethPair, pin_env: dict[str, str]) -> None:
    p = silent_pair
    live = Live("attach", "--netns", p.ns_a, p.dev_a, "--json", "--interval", "0.2", env=pin_env)
    try:
        live.next()
        row = _status(pin_env, p)
        assert [o["pid"] for o in row["owners"]] == [live.p.pid]
        assert row["owners"][0]["command"].startswith("tcflow attach")
        human = run("status", env=pin_env).stdout
        assert f"pid {live.p.pid}" in human

        # a second tcflow is told who counts it, not to detach it
        again = run("attach", "--netns", p.ns_a, p.dev_a, "--count", "1", env=pin_env)
        one_line_error(again, f"already counted by a running tcflow (pid {live.p.pid}")
        r = run("detach", f"{p.ns_a}/{p.dev_a}", env=pin_env)
        one_line_error(r, f"pid {live.p.pid}", "--force")
        assert live.next()["interfaces"][key(p)]  # still attached and counting

        r = run("detach", "--force", f"{p.ns_a}/{p.dev_a}", env=pin_env)
        assert r.returncode == 0, r.stderr
        t0 = time.monotonic()
        err = _stderr_until(live.p, lambda t: "removed by another process" in t and "error:" in t)
        assert "removed by another process" in err, err
        assert f"{p.ns_a}/{p.dev_a}" in err
        assert live.p.wait(timeout=10) == 1  # nothing left to count: it says so and stops
        assert time.monotonic() - t0 < 5
        assert "Traceback" not in err
    finally:
        live.kill()
    assert leftovers(p.ns_a, p.dev_a, pin_env["TCFLOW_PIN_DIR"]) == []


@pytest.mark.parametrize("how", ["tc filter del", "xdp off"])
def test_serve_drops_an_interface_whose_hooks_someone_removed(sandbox: Any, pin_env: dict[str, str],
                                                              how: str) -> None:
    one, two = sandbox.pair(addresses=False), sandbox.pair(addresses=False)
    ingress = "xdp" if how == "xdp off" else "tc"
    mode = ("--xdp-mode", "generic") if ingress == "xdp" else ()
    s = Serve("--ingress", ingress, *mode, f"{one.ns_a}/{one.dev_a}", f"{two.ns_a}/{two.dev_a}",
              env=pin_env)
    try:
        assert set(s.traffic()["interfaces"]) == {key(one), key(two)}
        if how == "xdp off":
            sh(f"ip -n {one.ns_a} link set dev {one.dev_a} xdpgeneric off")
        else:
            sh(f"tc -n {one.ns_a} filter del dev {one.dev_a} egress")
        end = time.monotonic() + 5
        while time.monotonic() < end and key(one) in s.traffic()["interfaces"]:
            time.sleep(0.1)
        assert set(s.traffic()["interfaces"]) == {key(two)}
        code, _, body = s.get("/healthz")
        health = json.loads(body)
        assert code == 200 and health["interfaces"] == 1 and health["hooks_removed"] == [key(one)]
        assert "# HELP" in s.metrics() and key(one) not in s.metrics()
    finally:
        err = s.stop()
    assert f"hook on {key(one)} was removed by another process" in err, err
    for pair in (one, two):
        assert leftovers(pair.ns_a, pair.dev_a) == []


def test_pins_under_another_pin_dir_are_found_and_removed_whole(silent_pair: VethPair,
                                                                pin_env: dict[str, str]) -> None:
    """Plain status and detach (default pin dir) see pins made with another
    --pin-dir; detach takes hooks and pin together; show marks an entry whose
    programs are gone."""
    p = silent_pair
    other = pin_env["TCFLOW_PIN_DIR"] + "-other"  # named as the session's own: its final sweep finds it too
    try:
        r = run("attach", "--pin", "--pin-dir", other, "--netns", p.ns_a, p.dev_a, "--count", "1", "--json",
                env=pin_env)
        assert r.returncode == 0, r.stderr
        row = _status(pin_env, p)
        assert row["pinned"] and row["pin_dir"] == other and row["owners"] == []
        assert "yes*" in run("status", env=pin_env).stdout

        # someone removes one hook by hand: show says the counts are frozen
        sh(f"tc -n {p.ns_a} filter del dev {p.dev_a} egress")
        shown = json.loads(run("show", "--json", "--pin-dir", other, env=pin_env).stdout)["interfaces"][key(p)]
        assert shown["hook"]["pinned"] and shown["hook"]["counting"] is False
        assert "NOT COUNTING" in run("show", "--pin-dir", other, env=pin_env).stdout

        r = run("detach", f"{p.ns_a}/{p.dev_a}", env=pin_env)  # the default pin dir, not `other`
        assert r.returncode == 0, r.stderr
        assert f"its pin under {other}" in r.stdout and f"removed the pins under {other}" in r.stdout
        assert not os.path.exists(other)  # both went: hooks and pin
        assert _status(pin_env, p, "--pin-dir", other) == {}
    finally:
        run("detach", "--all", "--force", "--pin-dir", other, env=pin_env)
    assert leftovers(p.ns_a, p.dev_a, other) == []


def test_detach_all_refuses_pins_a_live_serve_counts(silent_pair: VethPair, pin_env: dict[str, str]) -> None:
    """A pinned serve that adopted an attachment holds only its maps: still its owner."""
    p = silent_pair
    r = run("attach", "--pin", "--netns", p.ns_a, p.dev_a, "--count", "1", "--json", env=pin_env)
    assert r.returncode == 0, r.stderr
    s = Serve("--pin", f"{p.ns_a}/{p.dev_a}", env=pin_env)
    try:
        row = _status(pin_env, p)
        assert [o["pid"] for o in row["owners"]] == [s.p.pid]
        one_line_error(run("detach", "--all", env=pin_env), f"pid {s.p.pid}", "--force")
        one_line_error(run("detach", f"{p.ns_a}/{p.dev_a}", env=pin_env), f"pid {s.p.pid}")
        assert key(p) in s.traffic()["interfaces"]
    finally:
        s.stop()
    assert _status(pin_env, p)["owners"] == []  # pinned, counted by the kernel alone
    r = run("detach", "--all", env=pin_env)
    assert r.returncode == 0, r.stderr
    assert leftovers(p.ns_a, p.dev_a, pin_env["TCFLOW_PIN_DIR"]) == []


def _sigint_default() -> None:
    """In the child before exec: SIGINT as a terminal's Ctrl-C finds it. A
    suite started in the background by a shell without job control (`make
    test &`) inherits SIGINT ignored, and tcflow leaves an ignored SIGINT
    ignored until it takes the signal over: one sent before that is lost."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_at_start_prints_no_traceback(silent_pair: VethPair, pin_env: dict[str, str]) -> None:
    """SIGINT at any moment of the first 0.4 s of `attach`: a quiet exit, and
    nothing left attached. Python's own start (site, before any of tcflow's
    code) is outside tcflow's reach: a traceback that names no tcflow file
    comes from there and is not counted."""
    p = silent_pair
    bad = []
    for i in range(20):
        proc = subprocess.Popen([sys.executable, "-m", "tcflow", "attach", "--netns", p.ns_a, p.dev_a],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=REPO, env=pin_env,
                                preexec_fn=_sigint_default)
        time.sleep(i * 0.02)
        proc.send_signal(signal.SIGINT)
        try:
            err = proc.communicate(timeout=30)[1]
        except subprocess.TimeoutExpired:
            proc.kill()
            err = proc.communicate()[1]
            bad.append((i, "did not stop"))
            continue
        if "Traceback" in err and re.search(r'File "[^"]*/tcflow/', err):
            bad.append((i, err[-400:]))
        elif "Traceback" not in err:
            assert proc.returncode in (130, 0, -signal.SIGINT), (proc.returncode, err)  # -2: before Python took it
    assert bad == []
    assert leftovers(p.ns_a, p.dev_a, pin_env["TCFLOW_PIN_DIR"]) == []
