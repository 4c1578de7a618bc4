"""`serve --web.config.file`: exporter-toolkit's file (TLS, client
certificates, bcrypt basic auth, headers), scraped by a real Prometheus
(Debian's); a certificate replaced on disk used from the next connection;
a bad file refused before anything is attached."""

from __future__ import annotations

import http.client
import json
import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import bcrypt
import pytest
import trustme

from tcflow.host.sandbox import VethPair
from tests.support.cli import leftovers, one_line_error, run
from tests.support.serve import Serve, free_port, parse_metrics
from tests.support.tools import require

PASSWORD = "s3cret-scrape"


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Any]:
    """A CA, tcflow's certificate for 127.0.0.1, a scraper's client
    certificate from the same CA and one from another CA."""
    ca, other = trustme.CA(), trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("prometheus.example")
    stranger = other.issue_cert("prometheus.example")
    out: dict[str, Any] = {"ca": ca, "dir": tmp_path}
    for name, blob in (("ca.pem", ca.cert_pem), ("server.pem", server.cert_chain_pems[0]),
                       ("server.key", server.private_key_pem), ("client.pem", client.cert_chain_pems[0]),
                       ("client.key", client.private_key_pem), ("stranger.pem", stranger.cert_chain_pems[0]),
                       ("stranger.key", stranger.private_key_pem)):
        blob.write_to_path(str(tmp_path / name))
        out[name] = str(tmp_path / name)
    return out


def write_config(pki: dict[str, Any], auth: str = "RequireAndVerifyClientCert", users: bool = True) -> str:
    path = pki["dir"] / "web.yml"
    lines = ["tls_server_config:", f"  cert_file: {pki['server.pem']}", f"  key_file: {pki['server.key']}",
             f"  client_auth_type: {auth}", f"  client_ca_file: {pki['ca.pem']}", "  min_version: TLS12",
             "http_server_config:", "  http2: true", "  headers:", "    Strict-Transport-Security: max-age=300"]
    if users:
        hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()
        lines += ["basic_auth_users:", f"  prometheus: {hashed}"]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def client_ctx(pki: dict[str, Any], cert: str = "client") -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=pki["ca.pem"])
    if cert:
        ctx.load_cert_chain(pki[f"{cert}.pem"], pki[f"{cert}.key"])
    return ctx


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Any]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(config: str) -> str:
        port = free_port()
        cfg = tmp_path / "prometheus.yml"
        cfg.write_text(config)
        procs.append(subprocess.Popen(
            [require("prometheus"), f"--config.file={cfg}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        return f"http://127.0.0.1:{port}"

    try:
        yield start
    finally:
        for p in procs:
            p.terminate()
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def query(base: str, q: str) -> list[Any]:
    url = f"{base}/api/v1/query?query={urllib.parse.quote(q)}"
    with urllib.request.urlopen(url, timeout=10) as r:
        return list(json.loads(r.read())["data"]["result"])


def test_prometheus_scrapes_over_tls_with_basic_auth_and_a_client_certificate(
        veth_pair: VethPair, pin_env: dict[str, str], pki: dict[str, Any], prometheus: Any) -> None:
    p = veth_pair
    srv = Serve(f"{p.ns_a}/{p.dev_a}", "--web.config.file", write_config(pki), env=pin_env,
                tls=client_ctx(pki), auth=("prometheus", PASSWORD))
    try:
        p.exec_a("ping", "-c", "3", "-i", "0.05", "-W", "2", p.ip4_b)
        code, headers, body = srv.get("/metrics")
        assert code == 200 and headers["Strict-Transport-Security"] == "max-age=300"
        sent = parse_metrics(body.decode())
        assert any(name == "tcflow_ip_bytes_total" and v > 0 for (name, _), v in sent.items())
        base = prometheus(f"""
global: {{scrape_interval: 1s, scrape_timeout: 1s}}
scrape_configs:
  - job_name: tcflow
    scheme: https
    tls_config: {{ca_file: {pki['ca.pem']}, cert_file: {pki['client.pem']}, key_file: {pki['client.key']}}}
    basic_auth: {{username: prometheus, password: {PASSWORD}}}
    static_configs: [{{targets: ['127.0.0.1:{srv.port}']}}]
""")
        found: list[Any] = []
        for _ in range(60):  # Prometheus starts, then scrapes every second
            try:
                found = query(base, 'tcflow_ip_bytes_total{job="tcflow", direction="send", family="ipv4", '
                                    'protocol="other"}')
            except OSError:
                found = []
            if found and float(found[0]["value"][1]) == 3 * 84:
                break
            time.sleep(0.5)
        assert found and float(found[0]["value"][1]) == 3 * 84, found  # exact, through TLS and auth
        assert float(query(base, 'up{job="tcflow"}')[0]["value"][1]) == 1

        # without credentials: 401 with a challenge; a wrong password: 401
        for auth in (None, ("prometheus", "wrong"), ("nobody", PASSWORD)):
            srv.auth = auth
            code, headers, _ = srv.get("/metrics")
            assert code == 401 and headers["WWW-Authenticate"].startswith("Basic"), auth
        srv.auth = ("prometheus", PASSWORD)
        # a client certificate from another CA, or none: the handshake fails
        for ctx in (client_ctx(pki, "stranger"), client_ctx(pki, "")):
            with pytest.raises((ssl.SSLError, ConnectionError)):
                with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as raw:
                    with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                        tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                        if not tls.recv(100):  # TLS 1.3: the refusal comes after the client's finish
                            raise ConnectionError("closed")
        # plain HTTP to the TLS port gets nothing
        with pytest.raises((OSError, http.client.HTTPException)):
            urllib.request.urlopen(f"http://127.0.0.1:{srv.port}/healthz", timeout=10).read()
    finally:
        err = srv.stop()
    assert "Traceback" not in err


def test_a_certificate_replaced_on_disk_is_used_by_the_next_connection(
        veth_pair: VethPair, pin_env: dict[str, str], pki: dict[str, Any]) -> None:
    p = veth_pair
    srv = Serve(f"{p.ns_a}/{p.dev_a}", "--web.config.file", write_config(pki, "NoClientCert", users=False),
                env=pin_env, tls=client_ctx(pki, ""))

    def serial() -> int:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as raw:
            with client_ctx(pki, "").wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                der = tls.getpeercert(binary_form=True)
        from cryptography import x509

        return int(x509.load_der_x509_certificate(der).serial_number)

    try:
        first = serial()
        assert srv.get("/healthz")[0] == 200
        fresh = pki["ca"].issue_cert("127.0.0.1")
        d = pki["dir"]
        # as cert-manager and most tools do: new files written beside, then renamed over
        fresh.cert_chain_pems[0].write_to_path(str(d / "new.pem"))
        fresh.private_key_pem.write_to_path(str(d / "new.key"))
        os.rename(d / "new.key", pki["server.key"])
        os.rename(d / "new.pem", pki["server.pem"])
        second = serial()
        assert second != first  # no restart: the same process
        assert srv.p.poll() is None and srv.get("/healthz")[0] == 200
        # a broken replacement keeps the last good certificate in use, and says so once
        Path(pki["server.pem"]).write_text("not a certificate\n")
        assert serial() == second
    finally:
        err = srv.stop()
    assert "keeping the configuration loaded before" in err and err.count("keeping the configuration") == 1, err
    assert "Traceback" not in err


@pytest.mark.parametrize("content,phrases", [
    ("tls_server_config:\n  cert_file: /nonexistent.pem\n  key_file: /nonexistent.key\n",
     ("tls_server_config.cert_file", "cannot read /nonexistent.pem")),
    ("basic_auth_users:\n  prometheus: plaintext\n", ("basic_auth_users.prometheus", "not a bcrypt hash")),
    ("tls_config:\n  cert_file: x\n", ("tls_config: unknown key",)),
    ("tls_server_config: [\n", ("not YAML",)),
    ("http_server_config:\n  headers:\n    Server: evil\n", ("http_server_config.headers.Server",)),
])
def test_a_bad_web_config_is_one_line_naming_the_key_and_nothing_is_attached(
        veth_pair: VethPair, pin_env: dict[str, str], tmp_path: Path, content: str, phrases: tuple[str, ...]) -> None:
    p = veth_pair
    path = tmp_path / "web.yml"
    path.write_text(content)
    r = run("serve", f"{p.ns_a}/{p.dev_a}", "--web.config.file", str(path), "--listen",
            f"127.0.0.1:{free_port()}", env=pin_env)
    one_line_error(r, "--web.config.file", *phrases, code=2)
    assert leftovers(p.ns_a, p.dev_a) == []


def test_several_listen_addresses_and_a_telemetry_path(veth_pair: VethPair, pin_env: dict[str, str]) -> None:
    p = veth_pair
    other = free_port()
    srv = Serve(f"{p.ns_a}/{p.dev_a}", "--web.listen-address", f"[::1]:{other}", "--web.telemetry-path",
                "/tcflow-metrics", env=pin_env)
    try:
        assert srv.get("/tcflow-metrics")[0] == 200 and srv.get("/metrics")[0] == 404
        with urllib.request.urlopen(f"http://[::1]:{other}/healthz", timeout=10) as r:
            assert r.status == 200
    finally:
        srv.stop()
    r = run("serve", f"{p.ns_a}/{p.dev_a}", "--web.telemetry-path", "/traffic", env=pin_env)
    one_line_error(r, "--web.telemetry-path", code=2)


def test_the_process_that_accepts_connections_has_no_privilege(veth_pair: VethPair, pin_env: dict[str, str]) -> None:
    """Privilege separation: the HTTP front is a child of serve running as a
    user, with empty capability sets (bounding set included), no_new_privs,
    and no BPF object among its descriptors; figures through it stay exact."""
    p = veth_pair
    srv = Serve(f"{p.ns_a}/{p.dev_a}", env=pin_env)
    try:
        p.exec_a("ping", "-c", "2", "-i", "0.05", "-W", "2", p.ip4_b)
        kids = subprocess.run(["pgrep", "-P", str(srv.p.pid)], capture_output=True, text=True).stdout.split()
        assert len(kids) == 1, kids
        front = int(kids[0])
        status = dict(ln.split(":", 1) for ln in Path(f"/proc/{front}/status").read_text().splitlines() if ":" in ln)
        assert int(status["Uid"].split()[0]) != 0 and int(status["Gid"].split()[0]) != 0
        assert set(status["Uid"].split()) == {status["Uid"].split()[0]}  # real, effective, saved, fs: one user
        for field in ("CapEff", "CapPrm", "CapBnd", "CapAmb", "CapInh"):
            assert int(status[field], 16) == 0, (field, status[field])
        assert status["NoNewPrivs"].strip() == "1"
        fds = [os.readlink(f"/proc/{front}/fd/{fd}") for fd in os.listdir(f"/proc/{front}/fd")]
        assert not [f for f in fds if "bpf" in f], fds
        # its listening socket is the one scraped: the figures stay exact through it
        assert subprocess.run(["ss", "-Hltnp", f"sport = :{srv.port}"], capture_output=True,
                              text=True).stdout.count(f"pid={front},") == 1
        want = {("direction", "send"), ("family", "ipv4"), ("protocol", "other")}
        sent = [v for (name, labels), v in parse_metrics(srv.metrics()).items()
                if name == "tcflow_ip_bytes_total" and want <= labels]
        assert sent == [2 * 84], sent
        # a front that dies is started again, and serves
        os.kill(front, 9)
        for _ in range(100):
            kids = subprocess.run(["pgrep", "-P", str(srv.p.pid)], capture_output=True, text=True).stdout.split()
            if kids and int(kids[0]) != front:
                break
            time.sleep(0.1)
        assert srv.get("/healthz")[0] == 200
    finally:
        err = srv.stop()
    assert "the HTTP front exited" in err and "Traceback" not in err, err


def test_without_the_capabilities_to_drop_privilege_serve_stops_in_one_line(
        veth_pair: VethPair, pin_env: dict[str, str]) -> None:
    """The front is never started with privilege: where it cannot drop it
    (no CAP_SETPCAP), serve refuses, says why, and leaves nothing attached."""
    from tcflow.engine.privileges import UNSET
    from tests.support.cli import REPO

    p = veth_pair
    cmd = ["capsh", "--drop=cap_setpcap", "--", "-c",
           f"exec {sys.executable} -m tcflow serve {p.ns_a}/{p.dev_a} --listen 127.0.0.1:{free_port()}"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=pin_env, cwd=REPO, timeout=120)
    one_line_error(r, "tcflow lacks CAP_SETPCAP", "serve's HTTP front")  # said before anything is attached
    assert leftovers(p.ns_a, p.dev_a) == []
    # and without that check, the front itself refuses to serve with privilege
    r = subprocess.run(cmd, capture_output=True, text=True, env=dict(pin_env, **{UNSET: "1"}), cwd=REPO, timeout=120)
    one_line_error(r, "the HTTP front did not start: could not drop its privileges", "CAP_SETPCAP")
    assert leftovers(p.ns_a, p.dev_a) == []


def test_serve_runs_in_the_systemd_units_sandbox(veth_pair: VethPair, pin_env: dict[str, str]) -> None:
    """The unit's command in the unit's confinement, emulated: its bounding
    set (setpriv; every other capability gone, CAP_KILL too, so the agent
    cannot signal its front), no_new_privs, and ProtectSystem=strict's
    read-only file system but for RuntimeDirectory, CacheDirectory, /tmp and
    bpffs. serve attaches with --pin in its own namespace, its front
    serves, and SIGTERM stops both cleanly."""
    from tests.support.caps import setpriv
    from tests.support.cli import REPO

    unit = (Path(REPO) / "deploy" / "tcflow.service").read_text()
    keep = next(ln for ln in unit.splitlines() if ln.startswith("CapabilityBoundingSet=")).split("=", 1)[1].split()
    p = veth_pair
    subprocess.run(["ip", "-n", p.ns_a, "link", "set", "lo", "up"], check=True)
    port = free_port()
    # (/tmp stays writable, as PrivateTmp's is, but is not replaced: a checkout may live there)
    confine = ("set -e; mount --make-rprivate /; "
               "for d in /run/tcflow /var/cache/tcflow /tmp; do mkdir -p $d; mount --bind $d $d; done; "
               "mount -o remount,bind,ro /; if touch /var/tcflow-rw-probe 2>/dev/null; then exit 99; fi; "
               'exec "$@"')
    serve = [*setpriv(keep), "--no-new-privs", sys.executable, "-m", "tcflow", "serve", "--pin", p.dev_a,
             "--listen", f"127.0.0.1:{port}"]
    proc = subprocess.Popen(["nsenter", f"--net=/run/netns/{p.ns_a}", "unshare", "--mount", "sh", "-c", confine,
                             "confine", *serve], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=pin_env, cwd=REPO)
    get = ("import json, urllib.request as u; "
           f"print(json.load(u.urlopen('http://127.0.0.1:{port}/healthz', timeout=5))['interfaces'])")
    try:
        seen = ""
        for _ in range(100):
            if proc.poll() is not None:
                break
            seen = subprocess.run(["nsenter", f"--net=/run/netns/{p.ns_a}", sys.executable, "-c", get],
                                  capture_output=True, text=True).stdout.strip()
            if seen:
                break
            time.sleep(0.2)
        if seen != "1":
            proc.terminate()
            raise AssertionError(f"serve in the unit's sandbox: {seen!r}, exit {proc.wait()}: {proc.communicate()}")
        # nsenter, unshare, sh, setpriv each exec'd the next: proc is the agent
        bnd = int(dict(ln.split(":", 1) for ln in Path(f"/proc/{proc.pid}/status").read_text().splitlines())
                  ["CapBnd"], 16)
        assert bnd and not bnd & (1 << 5) and not bnd & (1 << 21)  # no CAP_KILL (5), no CAP_SYS_ADMIN (21)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "error" not in err and "Traceback" not in err, (proc.returncode, err)
    assert leftovers(p.ns_a, p.dev_a) != []  # --pin: left attached, as the unit wants
    r = subprocess.run([sys.executable, "-m", "tcflow", "detach", "--all"], env=pin_env, cwd=REPO,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert leftovers(p.ns_a, p.dev_a, pin_env["TCFLOW_PIN_DIR"]) == []
