"""3. Scale: one tcflow process attached to 1, 10, 100 and 1000 veths.

The parent makes the veths (in one throwaway namespace) and starts a fresh
child process per size, so each RSS figure is that of a process which
attached exactly that many interfaces. The child reports: the time to make
the Datapath (maps, and the program image from the cache; once per process), the time to attach all, the time of one
full read (one batch lookup plus the per-CPU sums, median of 9), the time to
detach all, its RSS, and how many programs it loaded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

from tcflow.host.sandbox import Sandbox


def child(ns: str, n: int) -> dict[str, Any]:
    import statistics

    import tcflow
    from tcflow.bpf.loader import Datapath

    t0 = time.perf_counter()
    dp = Datapath()
    compiled = time.perf_counter() - t0
    names = [f"s{i}a" for i in range(n)]
    m = tcflow.Monitor(names, netns=ns, datapath=dp)  # ingress auto: clsact on veths
    t0 = time.perf_counter()
    m.attach()
    attach_s = time.perf_counter() - t0
    reads = []
    for _ in range(9):
        t0 = time.perf_counter()
        snap = m.snapshot()
        reads.append(time.perf_counter() - t0)
    assert len(snap.interfaces) == n
    with open("/proc/self/status") as f:
        rss_kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    progs = dp.programs_loaded
    t0 = time.perf_counter()
    m.close()
    detach_s = time.perf_counter() - t0
    return {"interfaces": n, "compile_s": compiled, "attach_s": attach_s, "read_s": statistics.median(reads),
            "reads_s": reads, "detach_s": detach_s, "rss_mib": rss_kb / 1024, "programs_loaded": progs}


def run(sizes: tuple[int, ...] = (1, 10, 100, 1000)) -> dict[str, Any]:
    box = Sandbox("tcfb-")
    out = []
    try:
        ns = box.netns()
        t0 = time.perf_counter()
        box.veths(ns, max(sizes))
        made = time.perf_counter() - t0
        for n in sizes:
            r = subprocess.run([sys.executable, "-m", "bench.scale", ns, str(n)], capture_output=True, text=True,
                               cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), timeout=600)
            if r.returncode != 0:
                raise RuntimeError(f"scale child ({n}) failed: {r.stderr[-500:]}")
            out.append(json.loads(r.stdout.strip().splitlines()[-1]))
    finally:
        box.close()
    top = max(out, key=lambda r: r["interfaces"])
    return {"veths_made_s": made, "results": out,
            "target": {"what": f"{top['interfaces']} interfaces attached in at most 3 s; one full read in at "
                               "most 10 ms",
                       "attach_s": top["attach_s"], "read_ms": top["read_s"] * 1000,
                       "met": top["attach_s"] <= 3 and top["read_s"] <= 0.010}}


if __name__ == "__main__":
    print(json.dumps(child(sys.argv[1], int(sys.argv[2]))))
