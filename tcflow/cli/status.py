"""`tcflow status`: what tcflow has attached, where, and what else is on
those hooks; with --containers, every running container."""

from __future__ import annotations

import argparse
import json

from tcflow.cli.parser import mode_of
from tcflow.cli.screen import Exit, out
from tcflow.engine.privileges import require
from tcflow.engine.status import collect
from tcflow.output.status import render_containers, render_status


def run(args: argparse.Namespace) -> int:
    require(mode_of(args))
    if args.containers:
        from tcflow.containers import status as container_status

        report = container_status.collect()
        out(json.dumps(report, indent=1) if args.json else render_containers(report))
        return Exit.OK
    report = collect(args.pin_dir)
    out(json.dumps(report, indent=1) if args.json else render_status(report))
    return Exit.OK


