"""Podman: names from its ``containers.json``."""

from __future__ import annotations

import os
import re
from typing import Optional

from tcflow.containers.base import HEX64, Container, Pattern, read_json, trusted

PODMAN_STATE = ("/var/lib/containers/storage/overlay-containers/containers.json",)
PATTERNS: tuple[Pattern, ...] = (("podman", re.compile(r"/libpod-" + HEX64 + r"\.scope(?:/|$)")),)


def _podman_names() -> dict[str, str]:
    out: dict[str, str] = {}
    for path in PODMAN_STATE:
        if not trusted(os.path.dirname(path)):
            continue
        doc = read_json(path)
        for entry in doc if isinstance(doc, list) else []:
            if isinstance(entry, dict) and isinstance(entry.get("names"), list) and entry["names"]:
                out[str(entry.get("id"))] = str(entry["names"][0])[:256]
    return out


class Podman:
    """The Runtime for Podman: its names read once a scan."""

    def __init__(self) -> None:
        self.names = _podman_names()

    def identify(self, runtime: str, cid: str, pid: int) -> Optional[tuple[Container, int]]:
        return Container(cid, runtime, self.names.get(cid, "")), pid
