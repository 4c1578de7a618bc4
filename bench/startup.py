"""5. Start-up, memory and per-namespace load.

- warm start: `tcflow attach --json` in a new process to its first snapshot,
  with the compiled programs in the cache (Python start, imports, maps,
  verification, attach);
- cold start: the same with an empty cache directory (TCFLOW_CACHE_DIR):
  bcc compiles in a child process, and the kernel-header fallback tree is
  made again;
- steady RSS of `tcflow attach` and of `tcflow serve` (after a few
  snapshots, and for serve a few scrapes), from /proc/PID/status; and the
  peak RSS of the compile child a cold start runs (bcc, LLVM);
- one more namespace: loading (verifying) both TC programs for a namespace
  the agent does not serve yet.
"""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from typing import Any

from bench.procs import rss_mib
from tcflow.bpf.loader import PROG_TC_EGRESS, PROG_TC_INGRESS, Datapath
from tcflow.host.sandbox import Sandbox

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _first_snapshot(argv: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-m", "tcflow", *argv, "--json", "--count", "1"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    assert p.stdout is not None
    line = p.stdout.readline()
    elapsed = time.perf_counter() - t0
    _, err = p.communicate(timeout=120)
    if not line.startswith("{"):
        raise RuntimeError(f"no snapshot from tcflow: {err[-400:]}")
    return elapsed


def _steady_rss(argv: list[str], probe: Any) -> float:
    p = subprocess.Popen([sys.executable, "-m", "tcflow", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, cwd=ROOT)
    try:
        probe(p)
        return rss_mib(p.pid)
    finally:
        p.terminate()
        p.communicate(timeout=30)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(runs: int = 5) -> dict[str, Any]:
    with Datapath():
        pass  # the cache holds this machine's image now
    warm, cold = [], []
    with Sandbox("tcfb-") as box:
        pair = box.pair(dev_a="veth-a", dev_b="veth-b")
        target = ["attach", "--netns", pair.ns_b, pair.dev_b]
        for _ in range(runs):  # interleaved: drift hits both alike
            warm.append(_first_snapshot(target, dict(os.environ)))
            empty = tempfile.mkdtemp(prefix="tcfb-cache-")
            try:
                cold.append(_first_snapshot(target, dict(os.environ, TCFLOW_CACHE_DIR=empty)))
            finally:
                shutil.rmtree(empty, ignore_errors=True)

        def three_snapshots(p: subprocess.Popen) -> None:
            assert p.stdout is not None and p.stderr is not None
            for _ in range(3):
                if not p.stdout.readline().startswith("{"):
                    raise RuntimeError(f"tcflow attach stopped: {p.stderr.read()[-400:]}")

        attach_rss = _steady_rss(target + ["--json", "--interval", "0.5"], three_snapshots)
        port = _free_port()

        def scrapes(p: subprocess.Popen) -> None:
            assert p.stderr is not None
            end = time.monotonic() + 60
            while True:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2).read()
                    break
                except OSError:
                    if p.poll() is not None or time.monotonic() > end:
                        raise RuntimeError(f"tcflow serve did not come up: {p.stderr.read()[-400:]}") from None
                    time.sleep(0.05)
            for _ in range(5):
                urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
                time.sleep(0.2)

        serve_rss = _steady_rss(["serve", "--listen", f"127.0.0.1:{port}", "--netns", pair.ns_b, pair.dev_b],
                                scrapes)
    # the compile child's peak memory (what a cold start adds, for a moment)
    probe = ("import resource; from tcflow.bpf import build, kheaders; h = kheaders.locate(); "
             "build.compile_in_child(build.cache_key(h), h); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    compile_rss = int(subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT,
                                     check=True).stdout.split()[-1]) / 1024
    ns_load = []
    with Datapath() as dp:
        for cookie in range(1, 6):  # cookies of namespaces it does not serve: only immediates
            t0 = time.perf_counter()
            dp.prog(PROG_TC_INGRESS, cookie)
            dp.prog(PROG_TC_EGRESS, cookie)
            ns_load.append(time.perf_counter() - t0)
            dp.release(cookie)
    return {"runs": runs, "warm_s": warm, "cold_s": cold, "warm_median_s": statistics.median(warm),
            "cold_median_s": statistics.median(cold), "attach_rss_mib": attach_rss, "serve_rss_mib": serve_rss,
            "compile_child_peak_rss_mib": compile_rss,
            "namespace_load_s": ns_load, "namespace_load_median_s": statistics.median(ns_load)}
