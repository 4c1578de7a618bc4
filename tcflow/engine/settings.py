"""Settings: everything one agent is asked to do, in one object, checked
where it is built. The CLI and Monitor both build one, so a library user
gets the same one-line errors as `tcflow attach`.

Where recv is counted (``ingress``): "auto" is native XDP on a physical NIC
(no IFLA_INFO_KIND) and clsact ingress on virtual devices and wherever the
driver refuses native XDP; "xdp" (``xdp_mode`` auto/native/generic) or "tc"
as asked. send is always clsact egress.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Optional

from tcflow.bpf import libbpf
from tcflow.bpf.loader import DEFAULT_FLOW_ENTRIES, DEFAULT_MAX_IFACES, Options
from tcflow.bpf.reader import VALUE_SIZE
from tcflow.engine.flows import DEFAULT_TOP, IDLE_S
from tcflow.host import pins
from tcflow.model.errors import UsageError

INGRESS_CHOICES = ("auto", "xdp", "tc")
XDP_MODES = ("auto", "native", "generic")
MAX_INTERFACES_LIMIT = 65536
MAX_COUNTERS_MIB = 1024  # the per-CPU counters map; the default 4096 interfaces take 1.6 MiB per CPU
MIN_FLOW_ENTRIES, MAX_FLOW_ENTRIES = 16, 1 << 20
MAX_TOP = 1000


@dataclass(frozen=True)
class Settings:
    """``include_local`` counts loopback and src == dst traffic in the
    classes instead of only in LOCAL_*. ``pin``: the maps live under bpffs
    (``pin_dir``, default $TCFLOW_PIN_DIR or /sys/fs/bpf/tcflow) and outlive
    the process. ``containers``: also every container's namespace. With
    ``flows``, a flow table of ``flow_entries`` all interfaces together; a
    flow unchanged for ``flow_idle`` seconds is evicted; a snapshot lists
    each interface's ``flows_top`` busiest flows."""

    ingress: str = "auto"
    xdp_mode: str = "auto"
    include_local: bool = False
    pin: bool = False
    pin_dir: Optional[str] = None
    containers: bool = False
    max_interfaces: int = DEFAULT_MAX_IFACES
    flows: bool = False
    flow_entries: int = DEFAULT_FLOW_ENTRIES
    flow_idle: float = IDLE_S
    flows_top: int = DEFAULT_TOP

    def __post_init__(self) -> None:
        if self.ingress not in INGRESS_CHOICES:
            raise UsageError(f"unknown ingress hook {self.ingress}", hint="use auto, xdp or tc")
        if self.xdp_mode not in XDP_MODES:
            raise UsageError(f"unknown XDP mode {self.xdp_mode}", hint="use auto, native or generic")
        if self.xdp_mode != "auto" and self.ingress == "auto":
            object.__setattr__(self, "ingress", "xdp")  # asking for an XDP mode means asking for XDP
        if self.pin and not self.pin_dir:
            object.__setattr__(self, "pin_dir", pins.default_pin_dir())
        if not 1 <= self.max_interfaces <= MAX_INTERFACES_LIMIT:
            raise UsageError(f"--max-interfaces {self.max_interfaces} is not from 1 to {MAX_INTERFACES_LIMIT}",
                             hint="ask for fewer interfaces")
        ncpus = libbpf.num_possible_cpus()
        counters_mib = self.max_interfaces * VALUE_SIZE * ncpus / 2**20
        if counters_mib > MAX_COUNTERS_MIB:  # per-CPU: the same N costs 128 times more on a 256-CPU host
            raise UsageError(f"--max-interfaces {self.max_interfaces} needs {counters_mib:,.0f} MiB of counters on "
                             f"this machine's {ncpus} CPUs (at most {MAX_COUNTERS_MIB} MiB)",
                             hint="ask for fewer interfaces")
        if not MIN_FLOW_ENTRIES <= self.flow_entries <= MAX_FLOW_ENTRIES:
            raise UsageError(f"--flow-entries {self.flow_entries} is not between {MIN_FLOW_ENTRIES} and "
                             f"{MAX_FLOW_ENTRIES}", hint=f"e.g. --flow-entries {DEFAULT_FLOW_ENTRIES}")
        if not (math.isfinite(self.flow_idle) and 0 < self.flow_idle <= 86400):
            raise UsageError(f"--flow-idle {self.flow_idle} is not a number of seconds above 0 and at most 86400",
                             hint=f"e.g. --flow-idle {IDLE_S:g}")
        if not 0 <= self.flows_top <= MAX_TOP:
            raise UsageError(f"--flows-top {self.flows_top} is more than {MAX_TOP}", hint="ask for fewer")

    def options(self) -> Options:
        """What the Datapath needs of these: map sizes, pins, the flows image."""
        return Options(self.max_interfaces, self.pin_dir if self.pin else None, self.flows, self.flow_entries)

    def replace(self, **changes: object) -> "Settings":
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]
