"""5. /metrics under load: 50 concurrent clients x 200 scrapes, 100 interfaces;
then the same server held by 500 idle and 100 slow-header connections.

`tcflow serve` in its own process; the clients (threads here) ask for gzip,
as Prometheus does. Reports latency percentiles and errors, and, under the
held connections, the latency of single scrapes and the server's threads and
RSS. The netns test tier runs the same loads and asserts no errors and a
fixed thread count, never the latency.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from typing import Any

from bench.procs import children, rss_mib
from tcflow.host.sandbox import Sandbox


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _proc(pid: int) -> tuple[int, float]:
    """(threads, RSS MiB) of serve: its HTTP front's included."""
    threads = 0
    for p in [pid] + children(pid):
        with open(f"/proc/{p}/status") as f:
            threads += int(dict(line.split(":", 1) for line in f)["Threads"])
    return threads, rss_mib(pid)


def _held(port: int, pid: int, idle: int, slow: int, probes: int = 20) -> dict[str, Any]:
    """Scrapes while ``idle`` connections sit silent and ``slow`` ones send
    their headers a byte at a time."""
    before = _proc(pid)
    socks = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(idle)]
    trickle = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(slow)]
    for s in trickle:
        s.sendall(b"GET /metrics HTTP/1.1\r\nX-Slow: ")
    lat: list[float] = []
    errors = 0
    peak = before
    try:
        for _ in range(probes):
            for s in trickle:
                try:
                    s.sendall(b"a")
                except OSError:
                    pass
            t0 = time.perf_counter()
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30).read()
            except OSError:
                errors += 1
            lat.append(time.perf_counter() - t0)
            now = _proc(pid)
            peak = (max(peak[0], now[0]), max(peak[1], now[1]))
            time.sleep(0.25)
    finally:
        for s in socks + trickle:
            s.close()
    return {"idle": idle, "slow": slow, "probes": probes, "errors": errors, "max_ms": max(lat) * 1000,
            "p50_ms": statistics.median(lat) * 1000, "threads_before": before[0], "threads_peak": peak[0],
            "rss_before_mib": before[1], "rss_peak_mib": peak[1],
            "target": {"what": f"a scrape answers within 2 s while {idle} idle and {slow} slow-header "
                               "connections are held", "max_ms": max(lat) * 1000,
                       "met": errors == 0 and max(lat) <= 2.0}}


def run(clients: int = 50, scrapes: int = 200, interfaces: int = 100, idle: int = 500,
        slow: int = 100) -> dict[str, Any]:
    box = Sandbox("tcfb-")
    port = _free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = None
    try:
        ns = box.netns()
        names = box.veths(ns, interfaces)
        proc = subprocess.Popen([sys.executable, "-m", "tcflow", "serve", "--listen", f"127.0.0.1:{port}",
                                 "--netns", ns, *names], cwd=root, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        for _ in range(600):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2).read()
                break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError(f"serve exited: {proc.stderr.read() if proc.stderr else ''}") from None
                time.sleep(0.1)
        lat: list[float] = []
        errors: list[str] = []
        size = [0]

        def client() -> None:
            req = urllib.request.Request(url, headers={"Accept-Encoding": "gzip"})
            for _ in range(scrapes):
                t0 = time.perf_counter()
                try:
                    with urllib.request.urlopen(req, timeout=60) as r:
                        body = r.read()
                        if r.status != 200:
                            errors.append(str(r.status))
                        size[0] = len(body)
                except Exception as e:  # noqa: BLE001 - every failure counts as one
                    errors.append(repr(e))
                lat.append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        threads = [threading.Thread(target=client) for _ in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        held = _held(port, proc.pid, idle, slow) if idle or slow else None
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=60)
        box.close()
    q = statistics.quantiles(lat, n=100)
    return {"clients": clients, "scrapes_each": scrapes, "interfaces": interfaces, "errors": len(errors),
            "error_samples": errors[:5], "wall_s": wall, "scrapes_per_s": len(lat) / wall,
            "p50_ms": q[49] * 1000, "p99_ms": q[98] * 1000, "max_ms": max(lat) * 1000,
            "gzip_body_bytes": size[0], "held": held}
