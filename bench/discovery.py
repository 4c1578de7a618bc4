"""9. A node agent at node scale: idle `serve --containers` as host processes
and containers grow, and `serve --containers --flows` with 200 containers.

Idle CPU: for each count of running containers (busybox `sleep`, a private
dockerd as the container tests run it) and of extra host processes
(``sleep``, in the host's namespace), a `serve --containers` is started,
left 15 s to settle (its first full read of /proc, and five seconds for the
newest processes to stop being young), and its CPU time (user + system,
from /proc/PID/stat) is taken over ``seconds``; with no process started
meanwhile, and with ``forks`` a second (`true`, run by this bench), because
on a busy node processes start all the time.

Then, with the most containers running, one `serve --containers --flows`:
its RSS once settled, ``scrapes`` scrapes each of /metrics and /traffic
(p50, p99), and for ``first_packets`` more containers that ping as the first
thing they do, the time from `docker run` to their first counted packet in
/traffic.

Bounded: at most the largest count of processes at once (about 1 MiB of
memory each) and of containers (about 2 MiB each), all removed at the end,
also on failure.
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
from typing import Any, Optional

from bench.procs import rss_mib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETTLE_S = 15.0


def _ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(port: int, path: str) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=60) as r:
        return bytes(r.read())


def stop(p: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM, then SIGKILL if it has not gone in ``timeout`` seconds."""
    p.terminate()
    try:
        p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def _one(extra: int, forks: float, seconds: float, settle_s: float, containers: int) -> dict[str, Any]:
    kids = []
    serve = None
    try:
        kids = [subprocess.Popen(["sleep", "3600"]) for _ in range(extra)]
        t_start = time.monotonic()
        serve, port = _serve("--containers")
        # idle means started: every container's namespace attached (its
        # programs verified, about 70 ms a namespace) before the settling
        _counting(port, containers, 300)
        ready_s = time.monotonic() - t_start
        time.sleep(settle_s)
        if serve.poll() is not None:
            raise RuntimeError(f"tcflow serve --containers exited {serve.returncode}")
        procs = sum(1 for n in os.listdir("/proc") if n.isdigit())
        t0, c0 = time.monotonic(), _ticks(serve.pid)
        started = 0
        while time.monotonic() - t0 < seconds:
            if forks:
                subprocess.run(["true"], check=False)
                started += 1
                time.sleep(1 / forks)
            else:
                time.sleep(seconds)
        c1, t1 = _ticks(serve.pid), time.monotonic()
        return {"containers": containers, "extra": extra, "host_processes": procs, "forks_per_s": forks,
                "started": started, "ready_s": ready_s,
                "cpu_percent": (c1 - c0) * 100 / os.sysconf("SC_CLK_TCK") / (t1 - t0)}
    finally:
        if serve is not None:
            stop(serve)
        for k in kids:
            k.kill()
        for k in kids:
            k.wait()


def _counting(port: int, containers: int, timeout: float) -> None:
    """Until /healthz says every container is found and its namespace
    watched (each bench container has a namespace of its own)."""
    end = time.monotonic() + timeout
    while True:
        h = json.loads(_get(port, "/healthz"))
        if (h["containers"] or 0) >= containers and h["namespaces"] >= containers:
            return
        if time.monotonic() > end:
            raise RuntimeError(f"serve --containers did not count {containers} containers in {timeout:g} s: {h}")
        time.sleep(0.2)


def _serve(*args: str) -> tuple[subprocess.Popen, int]:
    port = _port()
    serve = subprocess.Popen([sys.executable, "-m", "tcflow", "serve", *args, "--listen", f"127.0.0.1:{port}"],
                             cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    end = time.monotonic() + 60
    while True:
        try:
            _get(port, "/healthz")
            return serve, port
        except OSError:
            if serve.poll() is not None or time.monotonic() > end:
                serve.kill()
                raise RuntimeError(f"tcflow serve {' '.join(args)} did not come up") from None
            time.sleep(0.05)


def _node(docker: Any, containers: int, scrapes: int, first_packets: int, settle_s: float) -> dict[str, Any]:
    """`serve --containers --flows` with ``containers`` running."""
    serve, port = _serve("--containers", "--flows")
    try:
        _counting(port, containers, 300)
        time.sleep(settle_s)
        rss = rss_mib(serve.pid)
        lat: dict[str, list[float]] = {"/metrics": [], "/traffic": []}
        sizes: dict[str, int] = {}
        for _ in range(scrapes):
            for path in lat:
                t0 = time.perf_counter()
                sizes[path] = len(_get(port, path))
                lat[path].append(time.perf_counter() - t0)
        first = []
        for i in range(first_packets):
            name = f"tcfb-first{i}"
            t0 = time.perf_counter()
            docker.container(name, f"198.18.200.{230 + i}", "sh", "-c", "ping -c 50 -i 0.01 -W 1 198.18.200.20; "
                             "sleep 3600")
            while True:
                e = json.loads(_get(port, "/traffic"))["interfaces"].get(f"{name}/eth0")
                if e is not None and sum(e["packets"].values()) > 0:
                    break
                if time.perf_counter() - t0 > 30:
                    raise RuntimeError(f"{name}: no counted packet in 30 s")
                time.sleep(0.005)
            first.append(time.perf_counter() - t0)
            docker.run("rm", "-f", name)
        rss_after = rss_mib(serve.pid)

        def pct(v: list[float], q: float) -> float:
            v = sorted(v)
            return v[min(len(v) - 1, int(q * len(v)))] * 1000

        return {"containers": containers, "rss_mib": rss, "rss_after_first_packets_mib": rss_after,
                "scrapes": scrapes, "bytes": sizes,
                "scrape_ms": {p: {"p50": pct(v, 0.5), "p99": pct(v, 0.99), "max": max(v) * 1000}
                              for p, v in lat.items()},
                "first_packet_s": first, "first_packet_median_s": statistics.median(first) if first else None}
    finally:
        stop(serve)


def run(extra: tuple[int, ...] = (0, 3000, 10000), forks: tuple[float, ...] = (0.0, 1.0),
        seconds: float = 20.0, settle_s: float = SETTLE_S, containers: tuple[int, ...] = (0, 200),
        scrapes: int = 100, first_packets: int = 5) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    node: Optional[dict[str, Any]] = None
    docker = None
    started = 0
    try:
        for count in sorted(containers):
            if count and docker is None:
                sys.path.insert(0, ROOT)
                from tests.support.docker import Dockerd

                docker = Dockerd("tcfb-").start()
            for i in range(started, count):
                docker.container(f"tcfb-n{i}", f"198.18.200.{20 + i}")  # type: ignore[union-attr]
            started = max(started, count)
            rows += [_one(n, f, seconds, settle_s, count) for n in extra for f in forks]
        if docker is not None:
            node = _node(docker, started, scrapes, first_packets, settle_s)
    finally:
        if docker is not None:
            docker.close()
    top, most = max(extra), max(containers)
    at_top = [r for r in rows if r["extra"] == top and r["containers"] == most]
    return {"seconds": seconds, "settle_s": settle_s, "rows": rows, "node": node,
            "target": {"what": f"idle `serve --containers` CPU, {top:,} extra host processes, {most} containers",
                       "cpu_percent": {f"{r['forks_per_s']:g}": r["cpu_percent"] for r in at_top},
                       "met": bool(at_top) and all(r["cpu_percent"] <= 1.0 for r in at_top)}}
