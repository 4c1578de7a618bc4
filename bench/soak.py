"""`make soak`: one `tcflow serve --containers --flows --pin` for an hour of churn.

A private dockerd (as the container tests run it) holds two long-lived
containers, a pinger and its peer (100 echo requests a second, for the whole
run), and every ``churn_s`` a new container starts, pings the peer five
times and goes (`docker run --rm`). A Prometheus server (Debian's, its own
data directory, 127.0.0.1 only) scrapes tcflow every 5 s. Every ``sample_s``
the soak takes tcflow's RSS, open fds, threads, and from /healthz its slots,
programs, namespaces, containers and the dashboard's history rings (what
the RSS plateau is made of: 43 kB for each interface seen in the last 15
minutes, at most 256), the totals carried for containers that may come
back (a removed one's go within a minute), and the pinned maps' entry counts.

At the end: growth of each sample after ``warm_s`` (past the dashboard's
15-minute history window), and what Prometheus says of tcflow's counters
over the run: ``resets()`` summed over every series of
tcflow_ip_bytes_total and tcflow_packets_total (0: no counter ever went
down, through every container's life and end).

Bounded: at most two long-lived and a few short-lived containers at once
(the churned ones live about two seconds), one Prometheus with a 2-hour
retention in a temporary directory; everything removed at the end, also on
failure.

    python -m bench.soak [--minutes 60] [--out bench/results]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.dirname(os.path.abspath(__file__))
PEER_IP, PINGER_IP = "198.18.200.10", "198.18.200.11"
PINNED_HASHES = ("flows", "flow_frags", "flow_handed")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=60) as r:
        return json.loads(r.read())


def _proc(pid: int) -> dict[str, float]:
    """serve's RSS (its HTTP front's included), threads, fds and CPU."""
    from bench.procs import rss_mib

    with open(f"/proc/{pid}/status") as f:
        status = {ln.split(":")[0]: ln.split(":", 1)[1].split() for ln in f}
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return {"rss_mib": rss_mib(pid), "threads": int(status["Threads"][0]),
            "fds": len(os.listdir(f"/proc/{pid}/fd")),
            "cpu_s": (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")}  # utime + stime


def _entries(pin_dir: str) -> dict[str, int]:
    sys.path.insert(0, ROOT)
    from tcflow.bpf import libbpf

    out = {}
    for name in PINNED_HASHES:
        path = os.path.join(pin_dir, name)
        if not os.path.exists(path):
            continue
        fd = libbpf.obj_get(path)
        try:
            out[name] = len(libbpf.map_keys(fd, ctypes.c_uint8 * libbpf.map_info(fd).key_size))
        finally:
            os.close(fd)
    return out


def run(minutes: float = 60.0, churn_s: float = 2.0, sample_s: float = 60.0, warm_s: float = 1200.0) -> dict[str, Any]:
    sys.path.insert(0, ROOT)
    from bench.discovery import stop
    from tests.support.docker import Dockerd

    work = tempfile.mkdtemp(prefix="tcfk-")
    pin_dir = f"/sys/fs/bpf/tcfk-{os.getpid()}"
    docker = Dockerd("tcfk-")
    serve = prom = None
    samples: list[dict[str, Any]] = []
    lives = failures = 0
    try:
        docker.start()
        port, prom_port = _port(), _port()
        serve = subprocess.Popen([sys.executable, "-m", "tcflow", "serve", "--containers", "--flows", "--pin",
                                  "--pin-dir", pin_dir, "--listen", f"127.0.0.1:{port}"], cwd=ROOT,
                                 stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "serve.log"), "wb"))
        with open(os.path.join(work, "prometheus.yml"), "w") as f:
            f.write(f"global: {{scrape_interval: 5s}}\nscrape_configs:\n  - job_name: tcflow\n"
                    f"    static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n")
        prom = subprocess.Popen(["prometheus", f"--config.file={work}/prometheus.yml",
                                 f"--storage.tsdb.path={work}/data", "--storage.tsdb.retention.time=2h",
                                 f"--web.listen-address=127.0.0.1:{prom_port}"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        docker.container("tcfk-peer", PEER_IP, "sleep", str(int(minutes * 60) + 900))  # outlives the run
        docker.container("tcfk-pinger", PINGER_IP, "ping", "-q", "-i", "0.01", PEER_IP)
        t0 = time.monotonic()
        next_sample = t0
        i = 0
        while (now := time.monotonic()) - t0 < minutes * 60:
            if now >= next_sample:
                health = _get(f"http://127.0.0.1:{port}/healthz")
                proc = _proc(serve.pid)
                if samples:  # CPU over the minute since the last sample, % of one core
                    proc["cpu_percent"] = 100 * (proc["cpu_s"] - samples[-1]["cpu_s"]) / (now - samples[-1]["t"])
                samples.append({"minute": round((now - t0) / 60, 2), "t": now, **proc,
                                **{k: health[k] for k in ("slots_used", "programs", "namespaces", "containers",
                                                          "interfaces")},
                                "history_rings": health.get("history", {}).get("rings"),
                                "carried_totals": health.get("carried_totals"),
                                "maps": _entries(pin_dir), "container_lives": lives})
                print(f"soak: {samples[-1]}", file=sys.stderr, flush=True)
                next_sample += sample_s
            if serve.poll() is not None:
                raise RuntimeError(f"tcflow serve exited {serve.returncode}")
            r = docker.run("run", "-d", "--rm", "--network", docker.network, "--ip", f"198.18.200.{100 + i % 100}",
                           "--sysctl", "net.ipv6.conf.all.disable_ipv6=1", docker.image, "ping", "-c", "5", "-i",
                           "0.2", PEER_IP, check=False)
            lives += r.returncode == 0
            failures += r.returncode != 0
            i += 1
            time.sleep(max(0.0, churn_s - (time.monotonic() - now)))
        time.sleep(10)  # the last lives end and are scraped
        q = "sum(resets(tcflow_ip_bytes_total[2h])) + sum(resets(tcflow_packets_total[2h]))"
        resets = _get(f"http://127.0.0.1:{prom_port}/api/v1/query?query={urllib.parse.quote(q)}")
        series = _get(f"http://127.0.0.1:{prom_port}/api/v1/query?query="
                      + urllib.parse.quote("count(tcflow_ip_bytes_total)"))
        up = _get(f"http://127.0.0.1:{prom_port}/api/v1/query?query=" + urllib.parse.quote("sum_over_time(up[2h])"))
    finally:
        for p in (serve, prom):
            if p is not None:
                stop(p, 60)
        docker.close()
        subprocess.run([sys.executable, "-m", "tcflow", "detach", "--all", "--force", "--pin-dir", pin_dir], cwd=ROOT,
                       capture_output=True, timeout=120)
        shutil.rmtree(pin_dir, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)

    def value(doc: Any) -> float | None:
        res = doc.get("data", {}).get("result", [])
        return float(res[0]["value"][1]) if res else None

    warm = [s for s in samples if s["minute"] * 60 >= warm_s] or samples[-1:]
    growth = {k: samples[-1][k] - warm[0][k] for k in ("rss_mib", "fds", "threads", "slots_used", "programs",
                                                        "history_rings")}
    cpu = sorted(x["cpu_percent"] for x in samples if "cpu_percent" in x)
    return {"minutes": minutes, "churn_s": churn_s,
            "cpu_percent": {"median": cpu[len(cpu) // 2], "max": cpu[-1]} if cpu else None,
            "container_lives": lives, "docker_run_failures": failures,
            "samples": samples, "warm_minute": warm[0]["minute"], "growth_after_warm": growth,
            "prometheus": {"resets": value(resets), "series_at_end": value(series), "scrapes_up": value(up)},
            "target": {"what": "RSS and fd growth after the warm-up; counter resets over the run",
                       "met": growth["rss_mib"] <= 1.0 and growth["fds"] <= 0 and value(resets) == 0.0}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench.soak", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--warm-minutes", type=float, default=20.0, help="growth is measured from here on")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("soak: run as root (it attaches BPF and runs a dockerd)", file=sys.stderr)
        return 1

    def stop(signum: int, _frame: Any) -> None:  # cleans up as Ctrl-C does, also when started in the background
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop)
    res = run(args.minutes, warm_s=args.warm_minutes * 60)
    res["date"] = time.strftime("%Y-%m-%d %H:%M")
    rev = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    res["commit"] = rev.stdout.strip() if rev.returncode == 0 else None  # what code the hour ran
    with open(os.path.join(args.out, "soak.json"), "w") as f:
        json.dump(res, f, indent=1)
    print(json.dumps({k: res[k] for k in ("minutes", "container_lives", "growth_after_warm", "prometheus",
                                          "target")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
