"""4. Start-up: from `tcflow attach --json` to its first snapshot line.

A new process each time, so Python start, imports, bcc's compile (clang) and
the kernel's verification of the programs are all included. tcflow keeps no
compile cache: every start compiles.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from typing import Any

from tcflow.sandbox import Sandbox


def run(runs: int = 5) -> dict[str, Any]:
    times = []
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with Sandbox("tcfb-") as box:
        pair = box.pair(dev_a="veth-a", dev_b="veth-b")
        for _ in range(runs):
            t0 = time.perf_counter()
            p = subprocess.Popen([sys.executable, "-m", "tcflow", "attach", "--netns", pair.ns_b, pair.dev_b,
                                  "--json", "--count", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True, cwd=root)
            assert p.stdout is not None
            line = p.stdout.readline()
            elapsed = time.perf_counter() - t0
            _, err = p.communicate(timeout=60)
            if not line.startswith("{"):
                raise RuntimeError(f"no snapshot from tcflow: {err[-400:]}")
            times.append(elapsed)
    return {"runs": runs, "seconds": times, "median_s": statistics.median(times), "cache": "none"}
