"""`tcflow serve`: attach, then serve /traffic, /metrics, /history and the
dashboard until stopped (tcflow/output/http/)."""

from __future__ import annotations

import argparse
import os

from tcflow.bpf import libbpf
from tcflow.cli.parser import mode_of, settings_of
from tcflow.cli.screen import Exit, attached_line, left_pinned, note
from tcflow.engine import loop, privileges
from tcflow.engine.agent import Agent
from tcflow.engine.privileges import require
from tcflow.model.errors import InterfaceError, TcflowError, UsageError
from tcflow.output.history import STEP_S, History
from tcflow.output.http import Source, is_loopback, make_server
from tcflow.output.http.routes import PATHS
from tcflow.output.http.webconfig import Reloading

DEFAULT_LISTEN = "127.0.0.1:8080"


def parse_listen(text: str) -> tuple[str, int]:
    """HOST:PORT, [IPV6]:PORT -> (host, port)."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"--web.listen-address {text} is not HOST:PORT",
                         hint="e.g. --web.listen-address 127.0.0.1:8080")
    return host, int(port)


def telemetry_path(text: str) -> str:
    if not text.startswith("/") or text in PATHS or any(c in text for c in " ?#\r\n\0"):
        raise UsageError(f"--web.telemetry-path {text!r} is not a path of its own",
                         hint=f"give one that starts with / and is not {', '.join(PATHS)}")
    return text


def web_config(path: str | None) -> Reloading | None:
    return Reloading(path, note) if path else None


def run(args: argparse.Namespace) -> int:
    listen = list(dict.fromkeys(parse_listen(a) for a in (args.listen or [DEFAULT_LISTEN])))
    metrics_path = telemetry_path(args.telemetry_path)
    web = web_config(args.web_config_file)  # a bad file stops here, before anything is attached
    settings, targets = settings_of(args)
    require(mode_of(args))
    agent = Agent(settings)
    history = History()
    if args.metrics_top_flows and not args.flows:
        raise UsageError("--metrics-top-flows needs --flows", hint="add --flows")
    agent.flows_top = max(agent.flows_top, args.metrics_top_flows)
    source = Source(lambda: agent.snapshot(flows_max_age=loop.FLOWS_SHARED_S), agent.program_stats, agent.health,
                    history, args.metrics_top_flows)

    def record() -> bool:  # the dashboard's history: one point a step
        history.record(source.snapshot())
        return True

    try:
        server = make_server(listen, source, web, metrics_path, note)
    except OSError as e:
        raise InterfaceError(f"cannot listen on {' '.join(_shown(h, p) for h, p in listen)}: {e.strerror}",
                             hint="choose another port with --web.listen-address HOST:PORT") from None
    stats_fd = -1
    serving = False
    try:
        with loop.started(agent, targets, note) as sig:
            try:
                try:
                    stats_fd = libbpf.enable_stats()
                except TcflowError as e:
                    if not privileges.stats_enabled():  # else the administrator's sysctl keeps them on
                        note(f"BPF run-time statistics unavailable ({e}): /metrics leaves out tcflow's own cost "
                             "(they need CAP_SYS_ADMIN, or sysctl kernel.bpf_stats_enabled=1)")
                server.start()
                serving = True
                scheme = "https" if web is not None and web.config.ssl is not None else "http"
                guarded = web is not None and (web.config.ssl is not None or web.config.users)
                for host, port in listen:
                    if not is_loopback(host):
                        note(f"listening on {_shown(host, port)}, reachable from other hosts (read-only endpoints"
                             f"{'' if guarded else '; --web.config.file adds TLS and basic auth'})")
                urls = " ".join(f"{scheme}://{_shown(h, p)}/" for h, p in listen)
                note(f"attached to {attached_line(agent)}; serving {urls} "
                     f"(/traffic, {metrics_path}, /healthz); Ctrl-C stops")
                record()
                loop.run(agent, sig, STEP_S, record, lambda: source.lock, note)
                return Exit.OK
            finally:  # before the agent closes: no request reads a closed agent
                server.close()
                if stats_fd >= 0:
                    os.close(stats_fd)  # the kernel goes back to its previous setting
    finally:
        server.close()  # also when the start failed (closing twice is harmless)
        if args.pin and serving:
            left_pinned(args, agent)


def _shown(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
