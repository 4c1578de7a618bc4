"""7. One `tcflow serve --containers` for many containers (a real dockerd).

The tests' own Docker (tests/support/docker.py: a dockerd with its own data
root, socket and network namespace, a busybox image imported locally) runs
``count`` containers, started one after another while tcflow serves. For
each: the time from `docker run` returning to the container's eth0 being
listed in /traffic. Then serve's RSS and programs with all of them, and
after all are removed (what is left).
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from typing import Any

from bench.procs import rss_mib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _get(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as r:
        return json.loads(r.read())


def run(count: int = 30) -> dict[str, Any]:
    sys.path.insert(0, ROOT)
    from tests.support.docker import Dockerd

    docker = Dockerd("tcfb-")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    serve = None
    try:
        docker.start()
        serve = subprocess.Popen([sys.executable, "-m", "tcflow", "serve", "--containers", "--listen",
                                  f"127.0.0.1:{port}"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        end = time.monotonic() + 60
        while True:
            try:
                _get(port, "/healthz")
                break
            except OSError:
                if serve.poll() is not None or time.monotonic() > end:
                    raise RuntimeError("tcflow serve did not come up") from None
                time.sleep(0.05)
        rss0 = rss_mib(serve.pid)
        latencies = []
        for i in range(count):
            name = f"tcfb-c{i}"
            docker.container(name, f"198.18.200.{20 + i}")
            t0 = time.perf_counter()
            while f"{name}/eth0" not in _get(port, "/traffic")["interfaces"]:
                if time.perf_counter() - t0 > 30 or serve.poll() is not None:
                    health = _get(port, "/healthz") if serve.poll() is None else "(exited)"
                    health = f"{health}; /traffic has {sorted(_get(port, '/traffic')['interfaces'])}" \
                        if serve.poll() is None else health
                    status = subprocess.run([sys.executable, "-m", "tcflow", "status", "--containers"], cwd=ROOT,
                                            capture_output=True, text=True, timeout=60)
                    pid = docker.run("inspect", "-f", "{{.State.Pid}} {{.State.Status}}", name).stdout.strip()
                    serve.terminate()
                    _, err = serve.communicate(timeout=60)
                    raise RuntimeError(f"{name} was not attached within 30 s; health {health}; docker: {pid}; "
                                       f"status --containers: {status.stdout[-1500:]}{status.stderr[-500:]}; "
                                       f"serve said: {err.decode(errors='replace')[-1500:]}")
                time.sleep(0.01)
            latencies.append(time.perf_counter() - t0)
        time.sleep(1)
        full = _get(port, "/healthz")
        rss_full = rss_mib(serve.pid)
        docker.run("rm", "-f", *[f"tcfb-c{i}" for i in range(count)], timeout=300)
        end = time.monotonic() + 60
        while _get(port, "/healthz")["interfaces"] and time.monotonic() < end:
            time.sleep(0.1)
        after = _get(port, "/healthz")
        return {"containers": count, "attach_after_run_s": latencies,
                "attach_after_run_median_s": statistics.median(latencies),
                "attach_after_run_max_s": max(latencies), "rss_empty_mib": rss0, "rss_full_mib": rss_full,
                "programs_full": full["programs"], "namespaces_full": full["namespaces"],
                "after_removal": {k: after[k] for k in ("interfaces", "programs", "namespaces", "slots_used")}}
    finally:
        if serve is not None:
            serve.terminate()
            serve.communicate(timeout=60)
        docker.close()
