"""The web configuration file (exporter-toolkit's format) without a server:
what loads, and the one line a mistake gets."""

from __future__ import annotations

import base64
import ssl
from pathlib import Path

import bcrypt
import pytest
import trustme

from tcflow.model.errors import UsageError
from tcflow.output.http.webconfig import Auth, Reloading, load


@pytest.fixture
def certs(tmp_path: Path) -> dict[str, str]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    out = {"ca": str(tmp_path / "ca.pem"), "cert": str(tmp_path / "c.pem"), "key": str(tmp_path / "c.key")}
    ca.cert_pem.write_to_path(out["ca"])
    cert.cert_chain_pems[0].write_to_path(out["cert"])
    cert.private_key_pem.write_to_path(out["key"])
    return out


def config(tmp_path: Path, text: str) -> str:
    p = tmp_path / "web.yml"
    p.write_text(text)
    return str(p)


def tls(certs: dict[str, str], *extra: str) -> str:
    return "\n".join(["tls_server_config:", f"  cert_file: {certs['cert']}", f"  key_file: {certs['key']}",
                      *extra]) + "\n"


def test_node_exporters_file_loads(tmp_path: Path, certs: dict[str, str]) -> None:
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
    cfg = load(config(tmp_path, tls(certs, "  client_auth_type: RequireAndVerifyClientCert",
                                    f"  client_ca_file: {certs['ca']}", "  min_version: TLS13",
                                    "  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]",
                                    "  curve_preferences: [CurveP256]")
                      + "http_server_config:\n  http2: false\n  headers:\n    X-Frame-Options: deny\n"
                      + f"basic_auth_users:\n  alice: {hashed}\n"))
    assert cfg.ssl is not None and cfg.ssl.verify_mode == ssl.CERT_REQUIRED
    assert cfg.ssl.minimum_version == ssl.TLSVersion.TLSv1_3
    assert cfg.headers == {"X-Frame-Options": "deny"} and set(cfg.users) == {"alice"}
    r = Auth()
    good = "Basic " + base64.b64encode(b"alice:pw").decode()
    assert r.authorized(cfg, good) and r.authorized(cfg, good)  # the second from the remembered check
    for bad in (None, "Basic " + base64.b64encode(b"alice:no").decode(), "Basic !!", "Bearer x",
                "Basic " + base64.b64encode(b"bob:pw").decode()):
        assert not r.authorized(cfg, bad), bad


@pytest.mark.parametrize("extra,phrase", [
    (("  client_auth_type: RequireAnyClientCert",), "tls_server_config.client_auth_type: RequireAnyClientCert"),
    (("  client_auth_type: RequireAndVerifyClientCert",), "tls_server_config.client_ca_file: missing"),
    (("  min_version: TLS13", "  max_version: TLS12"), "tls_server_config.min_version: is above max_version"),
    (("  min_version: SSL3",), "tls_server_config.min_version: unknown version"),
    (("  cipher_suites: [TLS_FOO]",), "tls_server_config.cipher_suites: unknown or unsupported suite TLS_FOO"),
    (("  bogus: 1",), "tls_server_config.bogus: unknown key"),
])
def test_each_mistake_names_its_key(tmp_path: Path, certs: dict[str, str], extra: tuple[str, ...],
                                    phrase: str) -> None:
    with pytest.raises(UsageError) as e:
        load(config(tmp_path, tls(certs, *extra)))
    assert phrase in str(e.value) and e.value.hint, str(e.value)


def test_a_key_that_is_not_the_certificates_own_is_refused(tmp_path: Path, certs: dict[str, str]) -> None:
    other = trustme.CA().issue_cert("127.0.0.1")
    other.private_key_pem.write_to_path(str(tmp_path / "other.key"))
    with pytest.raises(UsageError, match="the certificate and key do not load"):
        load(config(tmp_path, tls({**certs, "key": str(tmp_path / "other.key")})))


def test_a_changed_file_is_loaded_again_and_a_broken_one_keeps_the_last_good(tmp_path: Path,
                                                                            certs: dict[str, str]) -> None:
    path = config(tmp_path, tls(certs))
    said: list[str] = []
    r = Reloading(path, said.append)
    first = r.current()
    assert r.current() is first and r.version == 0  # nothing changed: no load
    Path(path).write_text(tls(certs, "  min_version: TLS13"))
    assert r.current() is not first and r.version == 1
    Path(path).write_text("tls_server_config: [\n")
    good = r.current()
    assert good.ssl is not None and good.ssl.minimum_version == ssl.TLSVersion.TLSv1_3 and r.version == 1
    r.current()
    assert len(said) == 1 and "keeping the configuration loaded before" in said[0]
