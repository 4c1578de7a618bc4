"""Run tcflow as root with exactly a set of capabilities, as a systemd unit's
CapabilityBoundingSet or a pod's `drop: [ALL]` plus `add` does: setpriv
limits the bounding set, and root's permitted and effective sets after exec
are that set.

``measure`` proves a set is what a mode needs: the mode works with it; with
any one capability taken away and tcflow's own check switched off
(TCFLOW_UNCHECKED_CAPS=1), the kernel refuses it; with the check on, tcflow
refuses it first, in one line naming that capability.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Callable, Optional, Sequence

from tcflow.engine.privileges import UNSET
from tests.support.cli import REPO

Works = Callable[[subprocess.CompletedProcess], bool]


def setpriv(caps: Sequence[str]) -> list[str]:
    bounding = ",".join(["-all", *(f"+{c.removeprefix('CAP_').lower()}" for c in caps)])
    return ["setpriv", "--bounding-set", bounding]


def tcflow(caps: Sequence[str], *args: str, netns: Optional[str] = None, checked: bool = True,
           timeout: float = 60, stdin: Optional[str] = None) -> subprocess.CompletedProcess:
    """``python -m tcflow ARGS`` with exactly ``caps``; in ``netns`` (entered
    with nsenter, which keeps the host's /sys and its bpffs) when given."""
    enter = ["nsenter", f"--net=/run/netns/{netns}"] if netns else []
    env = dict(os.environ, **{UNSET: "0" if checked else "1"})
    return subprocess.run([*enter, *setpriv(caps), sys.executable, "-m", "tcflow", *args], capture_output=True,
                          text=True, cwd=REPO, env=env, timeout=timeout, input=stdin)


def measure(caps: Sequence[str], run: Callable[[Sequence[str], bool], subprocess.CompletedProcess],
            works: Works) -> list[str]:
    """Check that ``caps`` is sufficient and that each one is necessary; the
    failures, one line each (empty when the set is exact)."""
    problems = []
    full = run(caps, True)
    if not works(full):
        problems.append(f"with {', '.join(caps)}: rc {full.returncode}: {full.stderr.strip()[-400:]}")
    for cap in caps:
        fewer = [c for c in caps if c != cap]
        unchecked = run(fewer, False)
        if works(unchecked):
            problems.append(f"without {cap} it still works (the kernel did not need it)")
        checked = run(fewer, True)
        lines = checked.stderr.strip().splitlines()
        if checked.returncode != 1 or len(lines) != 1 or cap not in lines[0] or "Traceback" in checked.stderr:
            problems.append(f"without {cap}, tcflow's check said (rc {checked.returncode}): {checked.stderr.strip()!r}")
    return problems
