"""Shell commands and someone else's BPF programs, for the tests."""

from __future__ import annotations

import os
import subprocess
from typing import Any

from tcflow.bpf import kheaders

# A foreign clsact program that passes everything: "someone else's filter".
FOREIGN = r"""
#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>
int foreign(struct __sk_buff *skb) { return TC_ACT_UNSPEC; }
"""


def sh(cmd: str, check: bool = True) -> str:
    """A shell command's output; bytes that are not UTF-8 (names can be any
    bytes) kept as surrogate escapes."""
    r = subprocess.run(cmd, shell=True, capture_output=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"{cmd}: {os.fsdecode(r.stderr).strip()}")
    return os.fsdecode(r.stdout)


def foreign_bpf(text: str) -> Any:
    """Compile someone else's program with bcc, with the headers tcflow found."""
    from bcc import BPF

    with kheaders.applied(kheaders.locate()):
        return BPF(text=text)
