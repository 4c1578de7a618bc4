"""A `tcflow serve` subprocess on a free loopback port, and reading /metrics."""

from __future__ import annotations

import base64
import json
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any, Optional

from tests.support.cli import REPO


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Serve:
    """A `tcflow serve` subprocess on a free loopback port."""

    def __init__(self, *args: str, env: dict[str, str], port: Optional[int] = None,
                 tls: Optional[ssl.SSLContext] = None, auth: Optional[tuple[str, str]] = None):
        self.port = port or free_port()
        self.tls, self.auth = tls, auth
        self.base = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.p = subprocess.Popen([sys.executable, "-m", "tcflow", "serve", "--listen", f"127.0.0.1:{self.port}",
                                   *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                                  env=env)
        end = time.monotonic() + 60
        while time.monotonic() < end:
            if self.p.poll() is not None:
                raise AssertionError(f"serve exited {self.p.returncode}: {self.p.stderr.read()}")  # type: ignore
            try:
                if self.get("/healthz")[0] == 200:
                    return
            except OSError:
                time.sleep(0.1)
        last: object = None
        try:
            last = self.get("/healthz")
        except OSError as e:
            last = e
        raise AssertionError(f"serve did not come up: {last!r}; {self.stop()[-2000:]}")

    def get(self, path: str, method: str = "GET", gzip_ok: bool = False, decompress: bool = True,
            headers: Optional[dict[str, str]] = None) -> tuple[int, dict[str, str], bytes]:
        auth = {}
        if self.auth is not None:
            auth = {"Authorization": "Basic " + base64.b64encode(":".join(self.auth).encode()).decode()}
        req = urllib.request.Request(self.base + path, method=method,
                                     headers={**({"Accept-Encoding": "gzip"} if gzip_ok else {}), **auth,
                                              **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=30, context=self.tls) as r:
                body = r.read()
                if r.headers.get("Content-Encoding") == "gzip" and decompress:
                    import gzip

                    body = gzip.decompress(body)
                return r.status, dict(r.headers), body
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()
        except urllib.error.URLError:
            if self.p.poll() is not None:  # say why it is gone, not just "connection refused"
                raise AssertionError(f"tcflow serve exited {self.p.returncode}: {self.stop()[-3000:]}") from None
            raise

    def traffic(self) -> dict[str, Any]:
        return json.loads(self.get("/traffic")[2])

    def metrics(self) -> str:
        return self.get("/metrics")[2].decode()

    def stop(self, sig: int = signal.SIGTERM) -> str:
        if self.p.poll() is None:
            self.p.send_signal(sig)
        _, err = self.p.communicate(timeout=30)
        return err


def parse_metrics(text: str) -> dict[tuple[str, frozenset], float]:
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out
