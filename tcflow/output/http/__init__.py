"""`tcflow serve`'s HTTP side: server.py (the agent's half: binds, starts
the front, answers it), child.py and front.py (the front: a process without
privilege that parses HTTP, does TLS and auth), ipc.py (between the two),
routes.py (the endpoints), coalesce.py (shared renderings), webconfig.py
(--web.config.file)."""

from tcflow.output.http.coalesce import AsyncCoalesced, Coalesced
from tcflow.output.http.front import is_loopback
from tcflow.output.http.routes import Endpoints, Source
from tcflow.output.http.server import Server, make_server

__all__ = ["AsyncCoalesced", "Coalesced", "Endpoints", "Server", "Source", "is_loopback", "make_server"]
