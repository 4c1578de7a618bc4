"""Run the tcflow CLI as a subprocess against test namespaces, and check leftovers."""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
from collections import Counter
from typing import Any, Optional

from tests.support.shell import sh

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run(*args: str, env: Optional[dict[str, str]] = None, timeout: float = 120,
        prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, sys.executable, "-m", "tcflow", *args], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=timeout)


class Live:
    """A `tcflow attach --json` subprocess, read line by line."""

    def __init__(self, *args: str, env: Optional[dict[str, str]] = None):
        self.p = subprocess.Popen([sys.executable, "-m", "tcflow", *args], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, cwd=REPO, env=env)
        self.sel = selectors.DefaultSelector()
        assert self.p.stdout is not None
        self.sel.register(self.p.stdout, selectors.EVENT_READ)
        self.lines: list[dict[str, Any]] = []
        self._err: Optional[str] = None

    def next(self, timeout: float = 60) -> dict[str, Any]:
        """The next JSON snapshot; fails with stderr if none comes in time."""
        assert self.p.stdout is not None
        if not self.sel.select(timeout):
            self.kill()
            raise AssertionError(f"no snapshot within {timeout} s; stderr: {self.stderr()}")
        line = self.p.stdout.readline()
        if not line:
            raise AssertionError(f"tcflow exited {self.p.wait()}: {self.stderr()}")
        self.lines.append(json.loads(line))
        return self.lines[-1]

    def until(self, pred: Any, timeout: float = 30) -> dict[str, Any]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            snap = self.next(timeout=max(0.1, end - time.monotonic()))
            if pred(snap):
                return snap
        raise AssertionError(f"condition not met in {timeout} s; last: {self.lines[-1] if self.lines else None}")

    def signal(self, sig: int = signal.SIGTERM) -> None:
        self.p.send_signal(sig)

    def rest(self, timeout: float = 30) -> list[dict[str, Any]]:
        """Every line until exit."""
        out, self._err = self.p.communicate(timeout=timeout)
        return [json.loads(ln) for ln in out.splitlines() if ln.strip()]

    def stderr(self) -> str:
        if self._err is not None:
            return self._err
        if self.p.poll() is None:
            return "(running)"
        assert self.p.stderr is not None
        self._err = self.p.stderr.read()
        return self._err

    def kill(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()


def env_with(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra)
    return env


def leftovers(ns: str, dev: str, pin_dir: Optional[str] = None) -> list[str]:
    """Anything tcflow could have left on a link or in bpffs; [] if clean."""
    left = []
    link = sh(f"ip -n {ns} -d link show {dev}")
    if "prog/xdp" in link or "xdpgeneric" in link or " xdp " in link:
        left.append("an XDP program")
    if "clsact" in sh(f"tc -n {ns} qdisc show dev {dev}"):
        left.append("a clsact qdisc")
    for hook in ("ingress", "egress"):
        if sh(f"tc -n {ns} filter show dev {dev} {hook}", check=False).strip():
            left.append(f"a {hook} filter")
    if pin_dir and os.path.exists(pin_dir):
        left.append(f"pins: {os.listdir(pin_dir)}")
    return left


def nonzero(d: dict[str, int]) -> Counter:
    return +Counter(d)


def one_line_error(r: Any, *phrases: str, code: int = 1) -> None:
    """A failed run that printed one line, `tcflow: error: ...`, with these phrases."""
    assert r.returncode == code, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tcflow: error: "), r.stderr
    assert "Traceback" not in r.stderr
    for ph in phrases:
        assert ph in lines[0], (ph, lines[0])


def settled_show(env: dict[str, str], k: str) -> dict[str, Any]:
    """`tcflow show --json` of one interface once two reads agree."""
    last = None
    for _ in range(50):
        r = run("show", "--json", env=env)
        assert r.returncode == 0, r.stderr
        cur = json.loads(r.stdout)["interfaces"][k]
        if last is not None and cur["bytes"] == last["bytes"]:
            return cur
        last = cur
        time.sleep(0.1)
    return cur
