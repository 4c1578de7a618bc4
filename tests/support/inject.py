"""Send raw frames on an interface inside a namespace (AF_PACKET)."""

from __future__ import annotations

import errno
import socket

from tcflow.system.netns import resolve, run_in


def send_frames(netns_name: str, ifname: str, frames: list[bytes], expect_drops: bool = False) -> None:
    """``expect_drops``: the egress path drops them on purpose, and send()
    says so with ENOBUFS after the frame went past the hooks."""
    ns = resolve(netns_name)

    def send() -> None:
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
            s.bind((ifname, 0))
            for f in frames:
                try:
                    s.send(f)
                except OSError as e:
                    if not (expect_drops and e.errno == errno.ENOBUFS):
                        raise

    run_in(ns.path, send)
