"""`tcflow serve`'s HTTP side: server.py (connections), routes.py (the
endpoints), coalesce.py (shared renderings)."""

from tcflow.output.http.coalesce import AsyncCoalesced, Coalesced
from tcflow.output.http.routes import Endpoints, Source
from tcflow.output.http.server import Server, is_loopback, make_server

__all__ = ["AsyncCoalesced", "Coalesced", "Endpoints", "Server", "Source", "is_loopback", "make_server"]
