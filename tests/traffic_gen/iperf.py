"""iperf3 between the two namespaces of a VethPair: one server run, one client run."""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

from tcflow.host.sandbox import VethPair


def client(pair: VethPair, dst: str, proto: str, seconds: float, *extra: str) -> dict[str, Any]:
    """A one-shot server in ``ns_b`` bound to ``dst``, a client in ``ns_a``; the
    client's JSON report. UDP sends 64-byte payloads as fast as it can."""
    server = subprocess.Popen(["ip", "netns", "exec", pair.ns_b, "iperf3", "-s", "-1", "-B", dst],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # iperf3 takes whole seconds (0 would mean "forever")
        args = ["ip", "netns", "exec", pair.ns_a, "iperf3", "-c", dst, "-J", "-t", str(max(1, round(seconds))),
                *extra]
        if proto == "udp":
            args += ["-u", "-b", "0", "-l", "64"]
        doc: dict[str, Any] = {}
        for _ in range(50):  # the server takes a moment to listen
            out = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 30)
            try:
                doc = json.loads(out.stdout)
            except ValueError:
                doc = {"error": out.stderr.strip() or "no output"}
            if out.returncode == 0 and "error" not in doc:
                return doc
            time.sleep(0.1)
        raise RuntimeError(f"iperf3 failed: {doc.get('error')}")
    finally:
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
