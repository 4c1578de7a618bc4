"""Throwaway namespaces for the benchmarks: SPEC's test ranges, no default route."""

from __future__ import annotations

import os
import subprocess
import uuid
from typing import Iterator


def sh(cmd: str, check: bool = True) -> str:
    r = subprocess.run(cmd, shell=True, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"{cmd}: {r.stderr.strip()}")
    return r.stdout


class Pair:
    """Two namespaces joined by a veth: ``a`` sends, ``b`` receives."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.ns_a, self.ns_b = f"tcfb-a{tag}", f"tcfb-b{tag}"
        self.dev_a, self.dev_b = "veth-a", "veth-b"
        self.ip_b = "198.18.0.2"
        sh(f"ip netns add {self.ns_a}")
        sh(f"ip netns add {self.ns_b}")
        try:
            sh(f"ip link add {self.dev_a} netns {self.ns_a} type veth peer name {self.dev_b} netns {self.ns_b}")
            sh(f"ip -n {self.ns_a} addr add 198.18.0.1/24 dev {self.dev_a}")
            sh(f"ip -n {self.ns_b} addr add {self.ip_b}/24 dev {self.dev_b}")
            for ns in (self.ns_a, self.ns_b):
                sh(f"ip -n {ns} link set lo up")
            sh(f"ip -n {self.ns_a} link set {self.dev_a} up")
            sh(f"ip -n {self.ns_b} link set {self.dev_b} up")
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for ns in (self.ns_a, self.ns_b):
            sh(f"ip netns del {ns}", check=False)

    def __enter__(self) -> "Pair":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def many_veths(ns: str, n: int) -> list[str]:
    """``n`` veth pairs inside ``ns`` (both ends there), via one `ip -batch`."""
    path = f"/tmp/tcflow-bench-{os.getpid()}.batch"
    with open(path, "w") as f:
        for i in range(n):
            f.write(f"link add s{i}a type veth peer name s{i}b\n")
    try:
        sh(f"ip -n {ns} -batch {path}")
    finally:
        os.unlink(path)
    return [f"s{i}a" for i in range(n)]


def leftover_namespaces() -> Iterator[str]:
    for line in sh("ip netns list", check=False).splitlines():
        name = line.split()[0] if line.strip() else ""
        if name.startswith("tcfb-"):
            yield name
