"""6. /metrics under load: 50 concurrent clients x 200 scrapes, 100 interfaces.

`tcflow serve` in its own process; the clients (threads here) ask for gzip,
as Prometheus does. Reports latency percentiles and errors. The netns test
tier runs the same load and asserts no errors, never the latency.
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

from tcflow.sandbox import Sandbox


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(clients: int = 50, scrapes: int = 200, interfaces: int = 100) -> dict[str, Any]:
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
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=60)
        box.close()
    q = statistics.quantiles(lat, n=100)
    return {"clients": clients, "scrapes_each": scrapes, "interfaces": interfaces, "errors": len(errors),
            "error_samples": errors[:5], "wall_s": wall, "scrapes_per_s": len(lat) / wall,
            "p50_ms": q[49] * 1000, "p99_ms": q[98] * 1000, "max_ms": max(lat) * 1000,
            "gzip_body_bytes": size[0]}
