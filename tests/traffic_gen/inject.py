"""Send raw frames on an interface inside a namespace (AF_PACKET)."""

from __future__ import annotations

import socket

from tcflow.netns import resolve, run_in


def send_frames(netns_name: str, ifname: str, frames: list[bytes]) -> None:
    ns = resolve(netns_name)

    def send() -> None:
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
            s.bind((ifname, 0))
            for f in frames:
                s.send(f)

    run_in(ns.path, send)
