"""`tcflow serve`'s HTTP server, in two processes (privilege separation):

- the agent (this process, root) binds the listening sockets, then starts
  the front (child.py: `python -m tcflow.output.http.child`) with them and
  one end of a socketpair, and nothing else (``pass_fds``);
- the front drops every privilege (user nobody, no capability in any set,
  an empty bounding set, no_new_privs) before it reads from the network,
  then parses HTTP, does TLS and basic auth (front.py), and asks the agent
  for each reply over the socketpair (ipc.py);
- the agent answers on a thread of its own (an event loop): each request is
  checked (JSON, bounded sizes, known fields) and handed to the endpoints
  (routes.py), whose renderings run on WORKERS threads and are shared by
  concurrent requests. It hands the front the web configuration's files,
  read as root, when they changed.

A bug in the HTTP path thus reads at most what the endpoints already show.
If the front dies, the agent starts another (at most RESTARTS times).
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import json
import os
import resource
import socket
import subprocess
import sys
import threading
from typing import Any, Optional

from tcflow.model.errors import TcflowError
from tcflow.output.http import ipc
from tcflow.output.http.front import MAX_CONNECTIONS, MAX_HEAD_BYTES, is_loopback
from tcflow.output.http.routes import Endpoints, Source
from tcflow.output.http.webconfig import MAX_FILE, Reloading, read_file

WORKERS = 4
MAX_IN_FLIGHT = 256  # requests the front may have open at the agent at once
RESTARTS = 5
READY_S = 30.0  # for the front to start, drop its privileges and listen
REPLY_S = 60.0  # for the front to take a reply
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


class Server:
    """``listen``: (host, port) pairs; ``web``: the web configuration, or
    None (plain HTTP, no auth). Binds at once (a busy port is an error
    here); ``start()`` starts the front, ``close()`` stops it and waits."""

    def __init__(self, listen: list[tuple[str, int]], source: Source, web: Optional[Reloading] = None,
                 metrics_path: str = "/metrics", note: Any = None):
        self.socks: list[tuple[socket.socket, bool]] = []  # (listening socket, on loopback)
        try:
            for host, port in listen:
                sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
                self.socks.append((sock, is_loopback(host)))
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((host, port))
                sock.listen(128)  # concurrent scrapers must not wait out SYN retransmits
        except OSError:
            for sock, _ in self.socks:
                sock.close()
            raise
        self.web = web
        self.note = note or (lambda text: None)
        self.pool = concurrent.futures.ThreadPoolExecutor(WORKERS, thread_name_prefix="tcflow-http-worker")
        self.endpoints = Endpoints(source, self.pool, metrics_path)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name="tcflow-http", daemon=True)
        self.front: Optional[subprocess.Popen[bytes]] = None
        self.restarts = 0
        self._ipc: Optional[socket.socket] = None
        self._closing = False
        self._ready = threading.Event()
        self._error: Optional[BaseException] = None

    @property
    def front_pid(self) -> Optional[int]:
        return self.front.pid if self.front is not None else None

    def start(self) -> "Server":
        _enough_fds(MAX_CONNECTIONS + 256)
        self.thread.start()
        self._ready.wait(READY_S + 10)
        if self._error is not None:
            raise self._error
        if not self._ready.is_set():
            raise TcflowError("the HTTP front did not start", hint="run `tcflow doctor`")
        return self

    def _spawn(self) -> socket.socket:
        """The front, with the listening sockets and its end of a new socketpair."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        fds = [s.fileno() for s, _ in self.socks] + [theirs.fileno()]
        spec = {"ipc": theirs.fileno(), "listen": [[s.fileno(), lb] for s, lb in self.socks],
                "web": self.web is not None}
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "PYTHONPATH": ":".join(_front_path())}
        try:  # -S: no site (its .pth files cost memory); the path holds what the front imports
            self.front = subprocess.Popen([sys.executable, "-S", "-m", "tcflow.output.http.child", json.dumps(spec)],
                                          pass_fds=fds, env=env, cwd="/", stdin=subprocess.DEVNULL)
        finally:
            theirs.close()
        self._ipc = ours
        return ours

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.set_exception_handler(lambda loop, context: None)
        try:
            self.loop.run_until_complete(self._serve())
        except BaseException as e:  # tell start(), if it still waits
            self._error = e
            self._ready.set()

    async def _serve(self) -> None:
        while not self._closing:
            sock = self._spawn()
            reader, writer = await asyncio.open_connection(sock=sock, limit=MAX_HEAD_BYTES * 4)
            try:  # the front says it dropped its privileges and listens
                header, _ = await asyncio.wait_for(ipc.read_frame(reader, max_body=0), READY_S)
                if header.get("ready") is not True:
                    raise ValueError(str(header.get("error", "not ready"))[:200])
            except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError, ValueError) as e:
                writer.close()
                code = await self.loop.run_in_executor(None, self._reap)
                why = str(e) if isinstance(e, ValueError) else f"exit {code}"
                if not self._ready.is_set():  # at start: serve fails with this one line
                    raise TcflowError(f"the HTTP front did not start: {why}",
                                      hint="tcflow needs CAP_SETUID, CAP_SETGID and CAP_SETPCAP to start it "
                                           "without privilege") from None
                self.note(f"the HTTP front did not start again ({why}); serving stopped")
                return
            self._ready.set()
            await self._answer(reader, writer)
            writer.close()
            if self._closing:
                return
            code = await self.loop.run_in_executor(None, self._reap)
            self.restarts += 1
            if self.restarts > RESTARTS:
                self.note(f"the HTTP front exited ({code}) {RESTARTS} times; serving stopped")
                return
            self.note(f"the HTTP front exited ({code}); starting it again")

    def _reap(self) -> Optional[int]:
        if self.front is None:
            return None
        try:
            return self.front.wait(10)
        except subprocess.TimeoutExpired:
            return _kill(self.front)

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Until the front goes: each request checked, then answered in a task of its own."""
        slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        tasks: set[asyncio.Task[None]] = set()
        try:
            while True:
                header, _ = await ipc.read_frame(reader, max_body=0)
                await slots.acquire()
                task = self.loop.create_task(self._one(header, writer, slots))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass  # the front went, or broke the protocol: it is let go (and started again)
        finally:
            for t in tasks:
                t.cancel()

    async def _one(self, header: dict[str, Any], writer: asyncio.StreamWriter, slots: asyncio.Semaphore) -> None:
        try:
            rid = header.get("id")
            if not isinstance(rid, int):
                return
            op = header.get("op")
            if op == "web":
                writer.write(ipc.frame({"id": rid, **self._web(header.get("version"))}))
                return
            method, target, enc = header.get("method"), header.get("target"), header.get("accept_encoding")
            if op != "get" or not all(isinstance(x, str) and len(x) <= MAX_HEAD_BYTES for x in (method, target, enc)):
                writer.write(ipc.frame({"id": rid, "code": 400, "ctype": "text/plain", "headers": {}},
                                       b"bad request\n"))
                return
            try:
                code, ctype, body, extra = await self.endpoints(str(method), str(target),
                                                                {"accept-encoding": str(enc)})
            except Exception as e:  # keep serving; say what broke, in one line
                code, ctype, body, extra = 500, "text/plain; charset=utf-8", \
                    f"tcflow: {type(e).__name__}: {e}\n".encode(), {}
            writer.write(ipc.frame({"id": rid, "code": code, "ctype": ctype, "headers": extra}, body))
            await asyncio.wait_for(writer.drain(), REPLY_S)  # a front that does not read holds no more
        except (asyncio.TimeoutError, ConnectionError):
            writer.close()  # it is let go, and started again
        finally:
            slots.release()

    def _web(self, version: Any) -> dict[str, Any]:
        """The web configuration's version, and its files (read here, as root) when the front's is older."""
        if self.web is None:
            return {"version": 0, "path": None}
        cfg = self.web.current()
        if version == self.web.version:
            return {"version": self.web.version}
        files = {}
        for f in cfg.files:
            try:
                files[f] = base64.b64encode(read_file(f)[:MAX_FILE + 1]).decode()
            except OSError:
                pass  # loaded a moment ago; the front's load says what is missing
        return {"version": self.web.version, "path": cfg.path, "files": files}

    def close(self) -> None:
        self._closing = True
        if self.front is not None and self.front.poll() is None:
            # The front runs as nobody: without CAP_KILL (a unit or pod that
            # grants only what tcflow needs) the agent cannot signal it. It
            # exits when its end of the socketpair reads end-of-file.
            if self._ipc is not None:
                try:
                    self._ipc.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            try:
                self.front.wait(10)
            except subprocess.TimeoutExpired:
                _kill(self.front)
        if self.thread.is_alive():
            self.thread.join(timeout=10)
        for sock, _ in self.socks:
            sock.close()
        self.pool.shutdown(wait=False, cancel_futures=True)
        if not self.thread.is_alive() and not self.loop.is_closed():
            self.loop.close()


def _kill(front: subprocess.Popen) -> Optional[int]:
    """SIGKILL and its exit status, where the agent may (root with CAP_KILL); else None, never a wait
    without end: the front then dies with the agent (PR_SET_PDEATHSIG)."""
    try:
        front.kill()
    except PermissionError:
        return None
    try:
        return front.wait(10)
    except subprocess.TimeoutExpired:
        return None


def _front_path() -> list[str]:
    """Where the front finds tcflow, and PyYAML and bcrypt (for a web configuration), if this Python has them."""
    out = [PACKAGE_ROOT]
    for name in ("yaml", "bcrypt"):
        try:
            mod = __import__(name)
        except ImportError:
            continue
        root = os.path.dirname(os.path.dirname(os.path.abspath(mod.__file__ or "")))
        if root not in out:
            out.append(root)
    return out


def _enough_fds(want: int) -> None:
    """Raise the soft fd limit so that MAX_CONNECTIONS fit (never above the
    hard one); the front inherits it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want if hard == resource.RLIM_INFINITY else min(want, hard), hard))


def make_server(listen: list[tuple[str, int]], source: Source, web: Optional[Reloading] = None,
                metrics_path: str = "/metrics", note: Any = None) -> Server:
    """Bind now (so a busy port is an error at once); serve after start()."""
    return Server(listen, source, web, metrics_path, note)
