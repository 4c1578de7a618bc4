"""The HTTP front's process: `python -m tcflow.output.http.child`, started by
server.py with the listening sockets and its end of the agent's socketpair
(``pass_fds``: no other descriptor), as root, which it stops being before it
reads a byte from the network:

1. it dies with the agent (PR_SET_PDEATHSIG, set again after the change of
   user, which clears it);
2. it empties its capability bounding set, then takes user and group
   `nobody` (setgroups([]), setresgid, setresuid: the permitted, effective
   and ambient sets empty with them), then sets no_new_privs;
3. it checks /proc/self/status says so (uid, CapEff, CapPrm, CapBnd, NoNewPrivs),
   or exits.

A bug in the HTTP path can then read at most what the endpoints show, and
change nothing. Argument: JSON {"ipc": FD, "listen": [[FD, loopback], ...]}.
"""

from __future__ import annotations

import asyncio
import base64
import ctypes
import json
import os
import pwd
import signal
import socket
import sys
from typing import Any, Optional

from tcflow.output.http import ipc  # noqa: I001
from tcflow.output.http.front import Front, Reply
from tcflow.output.http.webconfig import Auth, WebConfig, load

PR_SET_PDEATHSIG, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS = 1, 24, 38
FALLBACK_ID = 65534  # nobody / nogroup
REPLY_S = 60.0  # for the agent to answer a request


def drop_privileges() -> tuple[int, int]:
    """As described above; (uid, gid) taken. Raises OSError if any step fails."""
    libc = ctypes.CDLL(None, use_errno=True)

    def prctl(option: int, arg: int) -> None:
        if libc.prctl(option, ctypes.c_ulong(arg), 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), f"prctl({option}, {arg})")

    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:  # the agent is already gone
        os._exit(0)
    last = int(open("/proc/sys/kernel/cap_last_cap").read())
    for cap in range(last + 1):
        prctl(PR_CAPBSET_DROP, cap)
    try:
        pw = pwd.getpwnam("nobody")
        uid, gid = pw.pw_uid, pw.pw_gid
    except KeyError:
        uid = gid = FALLBACK_ID
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # the change of credentials cleared it
    if os.getppid() == 1:
        os._exit(0)
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines() if ":" in line)
    caps = [int(status[k].strip(), 16) for k in ("CapEff", "CapPrm", "CapBnd", "CapAmb", "CapInh")]
    if any(caps) or status["NoNewPrivs"].strip() != "1" or int(status["Uid"].split()[0]) == 0:
        raise OSError(f"privileges still held: {caps}, NoNewPrivs {status['NoNewPrivs'].strip()}")
    return uid, gid


class Agent:
    """The agent at the other end of the socketpair: every reply and the web
    configuration come from it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer
        self.waiting: dict[int, asyncio.Future[tuple[dict[str, Any], bytes]]] = {}
        self.next_id = 0
        self.closed = asyncio.get_running_loop().create_future()
        self.version = -1
        self.config: Optional[WebConfig] = None
        self.auth = Auth()

    async def read_replies(self) -> None:
        try:
            while True:
                header, body = await ipc.read_frame(self.reader)
                fut = self.waiting.pop(int(header.get("id", -1)), None)
                if fut is not None and not fut.done():
                    fut.set_result((header, body))
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            for fut in self.waiting.values():
                if not fut.done():
                    fut.set_exception(ConnectionError("the agent is gone"))
            if not self.closed.done():
                self.closed.set_result(None)

    async def call(self, request: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
        self.next_id += 1
        fut: asyncio.Future[tuple[dict[str, Any], bytes]] = asyncio.get_running_loop().create_future()
        rid = self.next_id
        self.waiting[rid] = fut
        self.writer.write(ipc.frame({"id": rid, **request}))
        try:
            return await fut
        finally:
            self.waiting.pop(rid, None)  # also when the caller gave up waiting

    async def backend(self, method: str, target: str, headers: dict[str, str]) -> Reply:
        try:
            h, body = await asyncio.wait_for(self.call({"op": "get", "method": method, "target": target,
                                                        "accept_encoding": headers.get("accept-encoding", "")}),
                                             REPLY_S)
        except asyncio.TimeoutError:
            return 503, "text/plain; charset=utf-8", b"tcflow: the agent did not answer in time\n", {}
        return int(h["code"]), str(h["ctype"]), body, {str(k): str(v) for k, v in h["headers"].items()}

    # the WebSource of front.Front
    async def current(self) -> Optional[WebConfig]:
        h, _ = await self.call({"op": "web", "version": self.version})
        if h.get("version") != self.version:
            files = {p: base64.b64decode(b) for p, b in h.get("files", {}).items()}
            try:
                self.config = load(h["path"], read=files.__getitem__) if h.get("path") else None
                self.version = int(h["version"])
            except Exception:  # the agent loaded these a moment ago; keep the last, ask again next time
                if self.config is None:
                    raise ConnectionError("no web configuration yet") from None  # fail closed: no plain HTTP
        if self.config is None and h.get("path"):
            raise ConnectionError("no web configuration yet")
        return self.config

    def authorized(self, cfg: WebConfig, header: Optional[str]) -> bool:
        return self.auth.authorized(cfg, header)


async def serve(spec: dict[str, Any]) -> None:
    ipc_sock = socket.socket(fileno=int(spec["ipc"]))
    socks = [(socket.socket(fileno=int(fd)), bool(loopback)) for fd, loopback in spec["listen"]]
    reader, writer = await asyncio.open_connection(sock=ipc_sock, limit=1 << 20)
    agent = Agent(reader, writer)
    replies = asyncio.get_running_loop().create_task(agent.read_replies())
    front = Front(socks, agent.backend, agent if spec.get("web") else None)
    asyncio.get_running_loop().set_exception_handler(lambda loop, context: None)  # a client's failure is not news
    await front.start()
    writer.write(ipc.frame({"id": 0, "ready": True}))  # privileges dropped, listening: the agent may go on
    try:
        await agent.closed  # until the agent closes its end (or dies)
    finally:
        front.close()
        replies.cancel()


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is the agent's to handle; it stops us
    spec = json.loads(sys.argv[1])
    try:
        drop_privileges()
    except OSError as e:  # told to the agent, which says it in its one line
        os.write(int(spec["ipc"]), ipc.frame({"id": 0, "error": f"could not drop its privileges ({e})"}))
        return 1
    os.chdir("/")
    try:
        asyncio.run(serve(spec))
    except Exception as e:  # one line, never a traceback; the agent starts another front
        print(f"tcflow: the HTTP front failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
