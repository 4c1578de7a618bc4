"""tcflow(8), generated from the argument parser itself (as the completion
is), so that it never lists an option the CLI does not have.

    python -m tcflow.cli.manpage > tcflow.8     (scripts/install.sh does this)

Section 8: tcflow is run by root. man-db looks in section 8 before section 3,
so `man tcflow` opens this page, not termios(3)'s tcflow().
"""

from __future__ import annotations

import argparse
import re
import sys

from tcflow.cli.completion import subcommands
from tcflow.cli.parser import parser
from tcflow.model.version import __version__

DESCRIPTION = """\
tcflow counts, exactly, what crosses Linux network interfaces: bytes and
packets sent and received, split into TCP, UDP and other IP protocols, IPv4
and IPv6, payload and IP bytes, and per connection (five-tuple) with
\\fB--flows\\fR. It counts with eBPF programs on the interfaces' own hooks:
XDP or clsact ingress on receive, clsact egress on send. One process counts
interfaces in any number of network namespaces, and with
\\fB--containers\\fR every running container in its own namespace.
"""

INTERFACES = """\
An interface is \\fIIFACE\\fR (in tcflow's namespace, or the one
\\fB--netns\\fR or \\fB--pid\\fR names) or \\fINETNS\\fB/\\fIIFACE\\fR, where
\\fINETNS\\fR is an \\fBip netns\\fR name or \\fBpid:\\fIN\\fR (the namespace
of process \\fIN\\fR). Names that are not printable are shown, and taken
back, as \\fB\\\\x\\fINN\\fR.
"""

PACKETS = """\
tcflow counts the packets on the wire: a GSO or GRO aggregate that the
kernel hands a hook as one skb counts as the segments it stands for, each
with its own IP and transport headers. On a veth or a NIC with offloads its
packet and byte counts are therefore above the interface's own counters
(\\fBip -s link\\fR, node_exporter's \\fBnode_network_*\\fR), which count
each aggregate once.
"""

FILES = [
    ("/sys/fs/bpf/tcflow",
     "the pinned maps of \\fB--pin\\fR (\\fB--pin-dir\\fR or \\fBTCFLOW_PIN_DIR\\fR for another)"),
    ("/var/cache/tcflow", "compiled programs and the kernel-header tree for bcc; root-only"),
    ("/run/tcflow", "the clsact qdiscs tcflow made, and the totals --containers carries across restarts"),
]

EXIT = [("0", "done (also after SIGINT or SIGTERM, once detached)"),
        ("1", "an error, printed as one line \\fBtcflow: error: ...\\fR with the fix"),
        ("2", "a usage error: a bad option or value"),
        ("130", "interrupted before anything was attached")]


def esc(text: str) -> str:
    """Plain text for troff: backslashes and leading dots or quotes made safe."""
    text = text.replace("\\", "\\\\").replace("-", "\\-")
    return re.sub(r"^([.'])", r"\\&\1", text, flags=re.M)


def _option(a: argparse.Action) -> list[str]:
    names = ", ".join(f"\\fB{esc(o)}\\fR" for o in a.option_strings)
    if a.nargs != 0:
        metavar = a.metavar or (("{" + ",".join(map(str, a.choices)) + "}") if a.choices else a.dest.upper())
        names += f" \\fI{esc(str(metavar))}\\fR"
    return [".TP", names, esc(" ".join((a.help or "").split()).replace("%%", "%"))]


def render(p: argparse.ArgumentParser) -> str:
    out = [f'.TH TCFLOW 8 "" "tcflow {__version__}" "System Administration"',
           ".SH NAME", "tcflow \\- exact per-interface traffic counters from XDP and TC eBPF programs",
           ".SH SYNOPSIS", "\\fBtcflow\\fR [\\fB\\-\\-debug\\fR] \\fICOMMAND\\fR [\\fIOPTIONS\\fR] [\\fIIFACE\\fR ...]",
           ".SH DESCRIPTION", DESCRIPTION.rstrip(), ".PP", INTERFACES.rstrip(), ".SH COMMANDS"]
    helps = {c.dest: c.help for s in p._actions if isinstance(s, argparse._SubParsersAction)
             for c in s._choices_actions}
    for name, sub in subcommands(p).items():
        out += [".SS " + esc(f"tcflow {name}"), esc(sub.description or helps.get(name) or "")]
        positional = [a for a in sub._actions if not a.option_strings]
        options = [a for a in sub._actions if a.option_strings and not isinstance(a, argparse._HelpAction)]
        for a in positional + options:
            out += _option(a) if a.option_strings else [".TP", f"\\fI{esc(str(a.metavar or a.dest))}\\fR",
                                                         esc(" ".join((a.help or "").split()))]
        if sub.epilog:
            out += [".PP", ".nf", esc(sub.epilog.rstrip()), ".fi"]
    out += [".SH PACKETS AND OTHER TOOLS", PACKETS.rstrip(), ".SH FILES"]
    for path, what in FILES:
        out += [".TP", f"\\fI{path}\\fR", what]
    out += [".SH EXIT STATUS"]
    for code, what in EXIT:
        out += [".TP", f"\\fB{code}\\fR", what]
    out += [".SH SEE ALSO", "\\fBip\\fR(8), \\fBtc\\fR(8), \\fBbpftool\\fR(8); docs/ in the source tree: the counting "
            "rules (SPEC.md), serve and metrics, flows, containers, guarantees."]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render(parser()))
