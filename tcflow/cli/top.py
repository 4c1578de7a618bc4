"""`tcflow top`: the busiest flows (five-tuples) live, like iftop."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import threading
import time

from tcflow.cli.parser import settings_of
from tcflow.cli.screen import Exit, Live, out
from tcflow.engine import loop
from tcflow.engine.agent import Agent
from tcflow.engine.doctor import require_root
from tcflow.output.top import rows, screen, summary, table


def run(args: argparse.Namespace) -> int:
    settings, targets = settings_of(args)
    agent = Agent(settings)
    require_root()
    live = Live(not args.json and sys.stdout.isatty())
    agent.flows_top = args.top or max(10, shutil.get_terminal_size().lines)
    shown = [0]

    def emit() -> bool:
        snap = agent.snapshot()
        if args.json:
            out(json.dumps({"time": round(snap.time, 6), "flows": [
                {"interface": who, **f} for who, f in rows(snap)[:agent.flows_top]]}))
        elif live.on:
            size = shutil.get_terminal_size()
            live.draw(screen(snap, args.units, size.columns, size.lines, live.kept))
        else:
            out(f"# {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(snap.time))} · {summary(snap)}")
            out("\n".join(table(snap, args.units, 120, agent.flows_top + 1)) + "\n")
        shown[0] += 1
        return not (args.count and shown[0] >= args.count)

    with loop.started(agent, targets, live.notice) as sig:
        try:
            live.enter()
            if emit():
                loop.run(agent, sig, args.interval, emit, threading.Lock, live.notice)
        finally:
            live.leave()
    return Exit.OK


