"""9. What an idle `tcflow serve --containers` costs as the host's processes grow.

Discovery looks for new containers four times a second. For each count of
extra host processes (``sleep``, in the host's namespace: no container), a
`serve --containers` is started, left 15 s to settle (its first full read of
/proc, and five seconds for the newest processes to stop being young), and
its CPU time (user + system, from /proc/PID/stat) is taken over ``seconds``.
This is done with no process started meanwhile, and with ``forks`` a
second (`true`, run by this bench), because on a busy node processes start
all the time: each one makes the next scan list /proc again.

Bounded: at most the largest count of processes at once (about 1 MiB of
memory each), all killed at the end, also on failure.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from typing import Any

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


def _one(extra: int, forks: float, seconds: float, settle_s: float) -> dict[str, Any]:
    kids = []
    serve = None
    try:
        kids = [subprocess.Popen(["sleep", "3600"]) for _ in range(extra)]
        serve = subprocess.Popen([sys.executable, "-m", "tcflow", "serve", "--containers", "--listen",
                                  f"127.0.0.1:{_port()}"], cwd=ROOT, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
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
        return {"extra": extra, "host_processes": procs, "forks_per_s": forks, "started": started,
                "cpu_percent": (c1 - c0) * 100 / os.sysconf("SC_CLK_TCK") / (t1 - t0)}
    finally:
        if serve is not None:
            serve.terminate()
            try:
                serve.wait(timeout=30)
            except subprocess.TimeoutExpired:
                serve.kill()
                serve.wait()
        for k in kids:
            k.kill()
        for k in kids:
            k.wait()


def run(extra: tuple[int, ...] = (0, 3000, 10000), forks: tuple[float, ...] = (0.0, 1.0),
        seconds: float = 20.0, settle_s: float = SETTLE_S) -> dict[str, Any]:
    rows = [_one(n, f, seconds, settle_s) for n in extra for f in forks]
    top = max(extra)
    at_top = [r for r in rows if r["extra"] == top]
    return {"seconds": seconds, "settle_s": settle_s, "rows": rows,
            "target": {"what": f"`serve --containers` CPU with {top:,} extra host processes, no container "
                               "(200 containers: not measured yet)",
                       "cpu_percent": {f"{r['forks_per_s']:g}": r["cpu_percent"] for r in at_top},
                       "met": bool(at_top) and all(r["cpu_percent"] <= 1.0 for r in at_top)}}
