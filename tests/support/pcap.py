"""tcpdump captures for tests that check counts against what the wire carried."""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import time


def capture(ns: str, dev: str, path: str, *, direction: str = "out", snaplen: int = 128, bpf_filter: str = "tcp",
            enter: tuple[str, ...] = ()) -> subprocess.Popen:
    """tcpdump on ``dev`` in namespace ``ns`` (or entered with ``enter``, e.g.
    ``("nsenter", "-t", PID, "-n")``), writing ``path``; returns once it listens."""
    where = list(enter) or ["ip", "netns", "exec", ns]
    proc = subprocess.Popen([*where, "tcpdump", "-i", dev, "-Q", direction, "-s", str(snaplen), "-B", "16384",
                             "--immediate-mode", "-U", "-w", path, *([bpf_filter] if bpf_filter else [])],
                            stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    line = proc.stderr.readline()  # "listening on ...": the capture is live
    assert "listening" in line, line
    return proc


def drain(cap: subprocess.Popen, path: str, quiet_s: float = 0.6) -> list[tuple[bytes, int]]:
    """Stop tcpdump once its file stopped growing for ``quiet_s`` (longer
    than TCP's 200 ms delayed ACK: a connection's last ACK may come after
    the sockets returned; SIGINT drops what is still in its ring buffer),
    and return the frames. At most 20 s."""
    last, since = -1, time.monotonic()
    end = since + 20
    while time.monotonic() < end:
        size = os.path.getsize(path)
        if size != last:
            last, since = size, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            break
        time.sleep(0.1)
    cap.send_signal(signal.SIGINT)
    cap.wait(10)
    return pcap_frames(path)


def pcap_frames(path: str) -> list[tuple[bytes, int]]:
    """(captured headers, original frame length) per record. Capturing only
    128 bytes a packet keeps 64 KB aggregates from overflowing the ring."""
    with open(path, "rb") as f:
        data = f.read()
    frames, off = [], 24
    while off + 16 <= len(data):
        incl, orig = struct.unpack_from("<II", data, off + 8)
        frames.append((data[off + 16: off + 16 + incl], orig))
        off += 16 + incl
    return frames
