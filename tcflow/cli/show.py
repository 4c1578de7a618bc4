"""`tcflow show`: what --pin left counting, read with bpf(2) alone."""

from __future__ import annotations

import argparse
import json

from tcflow.cli.parser import mode_of
from tcflow.cli.screen import Exit, out
from tcflow.engine.privileges import require
from tcflow.engine.status import read_pinned
from tcflow.model.snapshot import document
from tcflow.output.table import render_all


def run(args: argparse.Namespace) -> int:
    require(mode_of(args))
    snap = read_pinned(args.pin_dir, containers=args.containers)
    out(json.dumps(document(snap)) if args.json else render_all(snap))
    return Exit.OK


