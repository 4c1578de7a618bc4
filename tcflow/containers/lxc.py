"""LXC and systemd-nspawn: the cgroup path names the container itself."""

from __future__ import annotations

import re
from typing import Optional

from tcflow.containers.base import Container, Pattern

PATTERNS: tuple[Pattern, ...] = (
    ("lxc", re.compile(r"/lxc\.payload\.([A-Za-z0-9_.-]{1,64})(?:/|$)")),
    ("lxc", re.compile(r"^/lxc/([A-Za-z0-9_.-]{1,64})(?:/|$)")),
    ("systemd-nspawn", re.compile(r"/machine-([A-Za-z0-9_.-]{1,64})\.scope(?:/|$)")),
)


class Named:
    """The Runtime for LXC and systemd-nspawn."""

    def identify(self, runtime: str, cid: str, pid: int) -> Optional[tuple[Container, int]]:
        return Container(cid, runtime, cid), pid
