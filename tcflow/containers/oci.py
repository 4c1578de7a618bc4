"""containerd and CRI-O (Kubernetes): names from the OCI bundle's
``config.json`` annotations (pod name, namespace and container name)."""

from __future__ import annotations

import os
import re
from typing import Optional

from tcflow.containers.base import HEX64, Container, Pattern, read_json, trusted

CONTAINERD_STATE = "/run/containerd/io.containerd.runtime.v2.task"
CRIO_STATE = ("/run/containers/storage/overlay-containers", "/var/lib/containers/storage/overlay-containers")
PATTERNS: tuple[Pattern, ...] = (
    ("containerd", re.compile(r"/cri-containerd-" + HEX64 + r"\.scope(?:/|$)")),
    ("cri-o", re.compile(r"/crio-" + HEX64 + r"\.scope(?:/|$)")),
)
# the cgroupfs driver's path names no runtime: containerd's, last of all patterns
KUBEPODS: tuple[Pattern, ...] = (
    ("containerd", re.compile(r"/kubepods[^/]*/(?:[^/]+/)*" + HEX64 + r"(?:/|$)")),
)


def _annotations(cid: str) -> dict[str, str]:
    """The OCI bundle's annotations (containerd under Kubernetes, CRI-O)."""
    candidates = []
    if trusted(CONTAINERD_STATE):
        try:
            candidates += [os.path.join(CONTAINERD_STATE, ns, cid, "config.json")
                           for ns in os.listdir(CONTAINERD_STATE)]
        except OSError:
            pass
    candidates += [os.path.join(d, cid, "userdata", "config.json") for d in CRIO_STATE if trusted(d)]
    for path in candidates:
        doc = read_json(path)
        if isinstance(doc, dict) and isinstance(doc.get("annotations"), dict):
            return {str(k): str(v)[:256] for k, v in doc["annotations"].items()}
    return {}


class Oci:
    """The Runtime for containerd and CRI-O."""

    def identify(self, runtime: str, cid: str, pid: int) -> Optional[tuple[Container, int]]:
        ann = _annotations(cid)
        name = ann.get("io.kubernetes.cri.container-name") or ann.get("io.kubernetes.container.name", "")
        pod = ann.get("io.kubernetes.cri.sandbox-name") or ann.get("io.kubernetes.pod.name", "")
        ns = ann.get("io.kubernetes.cri.sandbox-namespace") or ann.get("io.kubernetes.pod.namespace", "")
        if not name and ann.get("io.kubernetes.cri.container-type") == "sandbox":
            name = "POD"  # the pause container that holds a pod's namespace
        return Container(cid, runtime, name, pod, ns), pid
