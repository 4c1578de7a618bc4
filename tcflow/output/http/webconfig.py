"""`serve --web.config.file`: TLS, client certificates, basic auth and
response headers, in Prometheus exporter-toolkit's format, so that the file
a node_exporter user already has works unchanged:

    tls_server_config:
      cert_file: /etc/tcflow/tls.crt      # or cert: (PEM inline)
      key_file: /etc/tcflow/tls.key       # or key:
      client_auth_type: RequireAndVerifyClientCert
      client_ca_file: /etc/tcflow/ca.crt
      min_version: TLS12
    http_server_config:
      headers:
        Strict-Transport-Security: max-age=31536000
    basic_auth_users:
      prometheus: $2y$10$...              # bcrypt

The file and every file it names are looked at again on each new
connection (one stat each): a replaced certificate, key, CA or user list is
used from the next connection on, without a restart. A file that no longer
loads keeps the last good configuration in use and is reported once.

A bad file at start is a one-line error naming the key and the fix.
"""

from __future__ import annotations

import base64
import hmac
import os
import ssl
import tempfile
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from tcflow.model.errors import UsageError

TLS_VERSIONS = {"TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1,
                "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
# exporter-toolkit's client_auth_type -> Python's verify_mode; the two that
# ask for a certificate without verifying it have no counterpart in Python's ssl.
CLIENT_AUTH = {"NoClientCert": ssl.CERT_NONE, "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
               "RequireAndVerifyClientCert": ssl.CERT_REQUIRED}
UNVERIFIED_AUTH = ("RequestClientCert", "RequireAnyClientCert")
# Go's names of the TLS 1.2 suites exporter-toolkit accepts -> OpenSSL's (TLS 1.3's are not configurable,
# in Go as in Python).
CIPHERS = {
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
}
CURVES = {"CurveP256": "prime256v1", "CurveP384": "secp384r1", "CurveP521": "secp521r1", "X25519": "X25519"}
TLS_KEYS = {"cert_file", "key_file", "cert", "key", "client_auth_type", "client_ca_file", "client_ca",
            "client_allowed_sans", "min_version", "max_version", "cipher_suites", "prefer_server_cipher_suites",
            "curve_preferences"}
HTTP_KEYS = {"http2", "headers"}
HEADERS = {"Strict-Transport-Security", "X-Content-Type-Options", "X-Frame-Options", "X-XSS-Protection",
           "Content-Security-Policy"}  # what exporter-toolkit lets a file set
MAX_FILE = 1 << 20


def _fail(path: str, key: str, what: str, fix: str) -> UsageError:
    return UsageError(f"--web.config.file {path}: {key}: {what}", hint=fix)


@dataclass
class WebConfig:
    """One loaded file: ``ssl`` (None: plain HTTP), ``users`` (name -> bcrypt
    hash; empty: no auth), ``headers`` added to every response, and the
    files it was read from (for reloading)."""

    path: str
    ssl: Optional[ssl.SSLContext] = None
    users: dict[str, bytes] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    client_allowed_sans: list[str] = field(default_factory=list)
    files: tuple[str, ...] = ()


Reader = Callable[[str], bytes]


def read_file(file: str) -> bytes:
    with open(file, "rb") as f:
        return f.read(MAX_FILE + 1)


def _read(path: str, key: str, file: str, read: Reader) -> bytes:
    try:
        data = read(file)
    except OSError as e:
        raise _fail(path, key, f"cannot read {file}: {e.strerror}", "name a readable file") from None
    except KeyError:
        raise _fail(path, key, f"{file} was not handed over", "name a readable file") from None
    if len(data) > MAX_FILE:
        raise _fail(path, key, f"{file} is larger than 1 MiB", "name the PEM file itself")
    return data


def load(path: str, read: Reader = read_file) -> WebConfig:
    """Read and check the file; UsageError naming the key if anything is
    wrong. ``read``: how a file's bytes are had (the HTTP front, which may
    open nothing, gets them from the agent)."""
    import yaml

    raw = _read(path, "file", path, read)
    try:
        doc = yaml.safe_load(raw) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise _fail(path, "file", f"not YAML{where}", "fix the YAML syntax") from None
    if not isinstance(doc, dict):
        raise _fail(path, "file", "is not a mapping", "see exporter-toolkit's web configuration format")
    unknown = sorted(set(map(str, doc)) - {"tls_server_config", "http_server_config", "basic_auth_users"})
    if unknown:
        raise _fail(path, unknown[0], "unknown key",
                    "use tls_server_config, http_server_config or basic_auth_users")
    cfg = WebConfig(path)
    files = [path]
    tls = doc.get("tls_server_config")
    if tls is not None:
        cfg.ssl, tls_files, cfg.client_allowed_sans = _tls(path, tls, read)
        files += tls_files
    cfg.headers = _http(path, doc.get("http_server_config"))
    cfg.users = _users(path, doc.get("basic_auth_users"))
    cfg.files = tuple(files)
    return cfg


def _mapping(path: str, key: str, value: Any, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(path, key, "is not a mapping", f"give {key} as keys and values")
    unknown = sorted(set(map(str, value)) - allowed)
    if unknown:
        raise _fail(path, f"{key}.{unknown[0]}", "unknown key", f"use {', '.join(sorted(allowed))}")
    return value


def _tls(path: str, value: Any, read: Reader) -> tuple[ssl.SSLContext, list[str], list[str]]:
    t = _mapping(path, "tls_server_config", value, TLS_KEYS)
    k = "tls_server_config."
    files: list[str] = []
    cert = _pem(path, t, "cert", files, read)
    key = _pem(path, t, "key", files, read)
    if cert is None or key is None:
        raise _fail(path, k + ("cert_file" if cert is None else "key_file"), "missing",
                    "give both cert_file and key_file (or cert and key)")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = _version(path, t, "min_version", ssl.TLSVersion.TLSv1_2)
    ctx.maximum_version = _version(path, t, "max_version", ssl.TLSVersion.TLSv1_3)
    if ctx.minimum_version > ctx.maximum_version:
        raise _fail(path, k + "min_version", "is above max_version", "lower min_version or raise max_version")
    _load_chain(path, ctx, cert, key)
    auth = str(t.get("client_auth_type") or "NoClientCert")
    if auth in UNVERIFIED_AUTH:
        raise _fail(path, k + "client_auth_type", f"{auth} (a certificate asked for but not verified) is not "
                    "available in tcflow", "use VerifyClientCertIfGiven or RequireAndVerifyClientCert with "
                    "client_ca_file")
    if auth not in CLIENT_AUTH:
        raise _fail(path, k + "client_auth_type", f"unknown value {auth!r}",
                    f"use one of {', '.join(CLIENT_AUTH)}")
    ca = _pem(path, t, "client_ca", files, read)
    if auth != "NoClientCert":
        if ca is None:
            raise _fail(path, k + "client_ca_file", f"missing (client_auth_type {auth} verifies against it)",
                        "name the CA that signs the scrapers' certificates")
        try:
            ctx.load_verify_locations(cadata=ca.decode("ascii", "replace"))
        except (ssl.SSLError, ValueError) as e:
            raise _fail(path, k + "client_ca_file", f"not a PEM certificate ({e})", "name the CA's PEM file") \
                from None
    ctx.verify_mode = CLIENT_AUTH[auth]
    suites = t.get("cipher_suites")
    if suites:
        bad = [s for s in suites if s not in CIPHERS]
        if bad:
            raise _fail(path, k + "cipher_suites", f"unknown or unsupported suite {bad[0]}",
                        f"use Go's names, e.g. {next(iter(CIPHERS))}")
        ctx.set_ciphers(":".join(CIPHERS[s] for s in suites))
    if t.get("prefer_server_cipher_suites", True):
        ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    curves = t.get("curve_preferences")
    if curves:
        bad = [c for c in curves if c not in CURVES]
        if bad:
            raise _fail(path, k + "curve_preferences", f"unknown curve {bad[0]}", f"use {', '.join(CURVES)}")
        ctx.set_ecdh_curve(CURVES[curves[0]])  # Python's ssl sets one curve for ECDH
    sans = t.get("client_allowed_sans") or []
    if sans and auth == "NoClientCert":
        raise _fail(path, k + "client_allowed_sans", "needs client certificates",
                    "set client_auth_type: RequireAndVerifyClientCert")
    return ctx, files, [str(s) for s in sans]


def _pem(path: str, t: dict[str, Any], name: str, files: list[str], read: Reader) -> Optional[bytes]:
    inline, file = t.get(name), t.get(f"{name}_file")
    if inline and file:
        raise _fail(path, f"tls_server_config.{name}", f"given inline and as {name}_file", "give one of them")
    if file:
        files.append(str(file))
        return _read(path, f"tls_server_config.{name}_file", str(file), read)
    return str(inline).encode() if inline else None


def _version(path: str, t: dict[str, Any], key: str, default: ssl.TLSVersion) -> ssl.TLSVersion:
    value = t.get(key)
    if value is None:
        return default
    if value not in TLS_VERSIONS:
        raise _fail(path, f"tls_server_config.{key}", f"unknown version {value!r}", f"use {', '.join(TLS_VERSIONS)}")
    return TLS_VERSIONS[value]


def _load_chain(path: str, ctx: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    """Python's ssl loads a chain from files only: through a private temporary directory."""
    with tempfile.TemporaryDirectory(prefix="tcflow-tls-") as d:
        cf, kf = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
        for name, data in ((cf, cert), (kf, key)):
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        try:
            ctx.load_cert_chain(cf, kf)
        except ssl.SSLError as e:
            raise _fail(path, "tls_server_config.cert_file", f"the certificate and key do not load ({e.reason})",
                        "give a PEM certificate and its own private key, unencrypted") from None


def _http(path: str, value: Any) -> dict[str, str]:
    if value is None:
        return {}
    h = _mapping(path, "http_server_config", value, HTTP_KEYS)
    headers = h.get("headers") or {}
    if not isinstance(headers, dict):
        raise _fail(path, "http_server_config.headers", "is not a mapping", "give header names and values")
    out = {}
    for name, v in headers.items():
        if name not in HEADERS:
            raise _fail(path, f"http_server_config.headers.{name}", "not a header the file may set",
                        f"use {', '.join(sorted(HEADERS))}")
        text = str(v)
        if any(c in text for c in "\r\n\0"):
            raise _fail(path, f"http_server_config.headers.{name}", "has a line break", "give one line")
        out[str(name)] = text
    return out


def _users(path: str, value: Any) -> dict[str, bytes]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _fail(path, "basic_auth_users", "is not a mapping", "give user names and bcrypt hashes")
    out = {}
    for user, h in value.items():
        text = str(h)
        if not text.startswith(("$2a$", "$2b$", "$2y$")) or len(text) != 60:
            raise _fail(path, f"basic_auth_users.{user}", "is not a bcrypt hash",
                        "hash the password with bcrypt (e.g. htpasswd -nBC 10 USER)")
        out[str(user)] = text.encode()
    if out:
        try:
            import bcrypt  # noqa: F401
        except ImportError:
            raise _fail(path, "basic_auth_users", "needs the bcrypt package",
                        "pip install bcrypt (a dependency of tcflow)") from None
    return out


class Reloading:
    """The configuration in use: on each new connection, one stat of every
    file it came from; if any changed, the file is loaded again. A file that
    no longer loads keeps the last good configuration (``error`` says why).
    ``version`` counts the loads."""

    def __init__(self, path: str, note: Callable[[str], None] = lambda s: None):
        self.path = path
        self.note = note
        self.config = load(path)
        self.stamp = _stamp(self.config.files)
        self.version = 0
        self.error = ""
        self._lock = threading.Lock()

    def current(self) -> WebConfig:
        stamp = _stamp(self.config.files)
        if stamp != self.stamp:
            with self._lock:
                if stamp != self.stamp:
                    self.stamp = stamp
                    try:
                        self.config = load(self.path)
                        self.stamp = _stamp(self.config.files)
                        self.version += 1
                        self.error = ""
                    except UsageError as e:
                        if str(e) != self.error:
                            self.error = str(e)
                            self.note(f"{e}; keeping the configuration loaded before")
        return self.config


class Auth:
    """Basic auth against a configuration's users. A checked password is
    remembered (bcrypt costs ~100 ms by design), only while the
    configuration stays the same one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._checked: dict[bytes, bool] = {}  # keyed digest of (user, password) -> ok
        self._for: Optional[WebConfig] = None
        self._key = os.urandom(32)
        self._dummy: Optional[bytes] = None

    def authorized(self, cfg: WebConfig, header: Optional[str]) -> bool:
        """True when ``cfg`` has no users or the header names one with its password."""
        if not cfg.users:
            return True
        if not header or not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        hashed = cfg.users.get(user)
        key = hmac.digest(self._key, user.encode() + b"\0" + password.encode(), "sha256")
        with self._lock:
            if self._for is not cfg:
                self._checked.clear()
                self._for = cfg
            known = self._checked.get(key)
        if known is not None:
            return known
        import bcrypt

        if hashed is None:  # as long as a real check, so that a wrong user name tells nothing
            if self._dummy is None:
                self._dummy = bcrypt.hashpw(b"tcflow", bcrypt.gensalt(10))
            bcrypt.checkpw(password.encode(), self._dummy)
            ok = False
        else:
            ok = bcrypt.checkpw(password.encode(), hashed)
        with self._lock:
            if self._for is cfg and len(self._checked) < 256:
                self._checked[key] = ok
        return ok


def _stamp(files: tuple[str, ...]) -> tuple[Any, ...]:
    out: list[Optional[tuple[int, int, int]]] = []
    for f in files:
        try:
            st = os.stat(f)
            out.append((st.st_ino, st.st_mtime_ns, st.st_size))
        except OSError:
            out.append(None)
    return tuple(out)
