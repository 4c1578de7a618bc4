"""tcflow for your own tests: assert what an application put on the wire.

    from tcflow.testing import Lab

    with Lab("myapp-") as lab:
        veth = lab.veth()
        with veth.meter() as m:
            veth.a.run(["my-client", veth.b.ipv4], check=True, timeout=30)
        m.assert_only_flows(["udp 198.18.0.2:53"])
        m.assert_no_traffic(family=6)

With pytest, the plugin (``plugin.py``, registered through the ``pytest11``
entry point) gives the same as fixtures, with no import: ``tcflow_veth``,
``tcflow_lab``, ``tcflow_netns``, ``tcflow_meter``, ``tcflow_traffic``.
See docs/ci.md. Needs root.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tcflow.model.lazy import exports

if TYPE_CHECKING:
    from tcflow.testing.lab import Endpoint, Lab, Veth
    from tcflow.testing.meter import Flow, Meter, flow_matcher

__all__ = ["Endpoint", "Flow", "Lab", "Meter", "Veth", "flow_matcher"]

_LAZY = {"Endpoint": "tcflow.testing.lab", "Lab": "tcflow.testing.lab", "Veth": "tcflow.testing.lab",
         "Flow": "tcflow.testing.meter", "Meter": "tcflow.testing.meter", "flow_matcher": "tcflow.testing.meter"}


__getattr__ = exports(globals(), _LAZY)
