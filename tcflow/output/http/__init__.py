"""`tcflow serve`'s HTTP side: server.py (the agent's half: binds, starts
the front, answers it), child.py and front.py (the front: a process without
privilege that parses HTTP, does TLS and auth), ipc.py (between the two),
routes.py (the endpoints), coalesce.py (shared renderings), webconfig.py
(--web.config.file).

The names below are imported when first used (PEP 562): the front's process
imports this package too, and must not load the agent's side (the
endpoints, prometheus_client) into its memory.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tcflow.model.lazy import exports

if TYPE_CHECKING:
    from tcflow.output.http.coalesce import AsyncCoalesced, Coalesced
    from tcflow.output.http.front import is_loopback
    from tcflow.output.http.routes import Endpoints, Source
    from tcflow.output.http.server import Server, make_server

__all__ = ["AsyncCoalesced", "Coalesced", "Endpoints", "Server", "Source", "is_loopback", "make_server"]
_LAZY = {"AsyncCoalesced": "coalesce", "Coalesced": "coalesce", "is_loopback": "front", "Endpoints": "routes",
         "Source": "routes", "Server": "server", "make_server": "server"}
__getattr__ = exports(globals(), {name: f"tcflow.output.http.{module}" for name, module in _LAZY.items()})
