"""A real Docker for the container tests, started and removed by the tests.

Debian's dockerd (which starts its own containerd) runs in a network
namespace of its own (entered with nsenter, which leaves the cgroup mounts in
place, unlike `ip netns exec`), with its own data root, exec root, pid file
and socket under a root-only temporary directory: the host's Docker, if any,
is never touched. No registry is reachable, so the image is a static busybox
imported from a tarball made here. Containers live on an --internal network
in SPEC's test ranges, with IPv6 off inside them (no router solicitations or
DAD probes arriving at moments the tests do not control).

If dockerd cannot start, ``Dockerd.start`` raises with the reason and the
tail of its log: a test that needs it fails, never skips.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from typing import Optional

DOCKER = "/usr/bin/docker"  # Debian's client, matching its dockerd
BUSYBOX = "/bin/busybox"    # Debian's busybox-static
APPLETS = ("sh", "sleep", "ping", "nc", "cat", "echo", "true", "ip", "dd", "yes")
SUBNET4, GATEWAY_FREE = "198.18.200.0/24", "198.18.200."


class Dockerd:
    def __init__(self, prefix: str):
        self.prefix = prefix
        self.dir = tempfile.mkdtemp(prefix=f"{prefix}docker-")  # 0700, root's
        self.ns = f"{prefix}dockerd"
        self.sock = os.path.join(self.dir, "docker.sock")
        self.proc: Optional[subprocess.Popen] = None
        self.image = f"{prefix}busybox:1"
        self.network = f"{prefix}net"

    # -- life -------------------------------------------------------------
    def start(self, timeout: float = 60) -> "Dockerd":
        for tool in ("dockerd", DOCKER, BUSYBOX):
            if not shutil.which(tool):
                raise RuntimeError(f"{tool} is not installed: `make setup` installs docker.io and busybox-static")
        subprocess.run(["ip", "netns", "add", self.ns], check=True)
        subprocess.run(["ip", "-n", self.ns, "link", "set", "lo", "up"], check=True)
        # no IPv6 on the bridges either: no MLD or router solicitations at moments
        # the tests do not choose
        subprocess.run(["ip", "netns", "exec", self.ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
                        "net.ipv6.conf.default.disable_ipv6=1"], check=True)
        log = open(os.path.join(self.dir, "dockerd.log"), "wb")
        self.proc = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{self.ns}", "dockerd", "--data-root", os.path.join(self.dir, "data"),
             "--exec-root", os.path.join(self.dir, "exec"), "--pidfile", os.path.join(self.dir, "docker.pid"),
             "-H", f"unix://{self.sock}", "--iptables=false", "--ip6tables=false", "--bridge=none",
             "--ip-forward=false", "--userland-proxy=false", "--storage-driver=vfs", "--log-level=warn"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        end = time.monotonic() + timeout
        while True:
            if self.run("version", check=False).returncode == 0:
                break
            if self.proc.poll() is not None or time.monotonic() > end:
                raise RuntimeError(f"dockerd did not start: {self.log_tail()}")
            time.sleep(0.2)
        self._image()
        self.run("network", "create", "--internal", "--subnet", SUBNET4, self.network)
        return self

    def _image(self) -> None:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for d in ("bin", "etc", "tmp", "proc", "sys", "dev"):
                info = tarfile.TarInfo(d)
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            tar.add(BUSYBOX, "bin/busybox")
            for applet in APPLETS:
                info = tarfile.TarInfo(f"bin/{applet}")
                info.type, info.linkname = tarfile.SYMTYPE, "busybox"
                tar.addfile(info)
        r = subprocess.run([DOCKER, "-H", f"unix://{self.sock}", "import", "-c", 'CMD ["/bin/sh"]', "-",
                            self.image], input=buf.getvalue(), capture_output=True)
        if r.returncode != 0:
            raise RuntimeError(f"docker import failed: {r.stderr.decode(errors='replace')}")

    def log_tail(self, n: int = 15) -> str:
        try:
            with open(os.path.join(self.dir, "dockerd.log"), errors="replace") as f:
                return " | ".join(f.read().strip().splitlines()[-n:])
        except OSError:
            return "(no log)"

    def close(self) -> None:
        """Every container, the network, dockerd and its containerd, the
        namespace, the directory; each step also when an earlier one failed."""
        if self.proc is not None and self.proc.poll() is None:
            ids = self.run("ps", "-aq", check=False).stdout.split()
            if ids:
                self.run("rm", "-f", *ids, check=False, timeout=120)
            self.run("network", "rm", self.network, check=False)
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        # dockerd's containerd and shims run in their own sessions: anything
        # still running from our directory goes
        for pid in _pids_using(self.dir):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        for line in reversed(open("/proc/self/mounts").read().splitlines()):
            mnt = line.split()[1]
            if mnt.startswith(self.dir):
                subprocess.run(["umount", "-l", mnt], check=False)
        subprocess.run(["ip", "netns", "del", self.ns], check=False, capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- use --------------------------------------------------------------
    def run(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        r = subprocess.run([DOCKER, "-H", f"unix://{self.sock}", *args], capture_output=True, text=True,
                           timeout=timeout)
        if check and r.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)}: {r.stderr.strip()}")
        return r

    def container(self, name: str, ip: str, *cmd: str) -> str:
        """Start a container on the test network; its id."""
        return self.run("run", "-d", "--name", name, "--network", self.network, "--ip", ip,
                        "--sysctl", "net.ipv6.conf.all.disable_ipv6=1", self.image,
                        *(cmd or ("sleep", "3600"))).stdout.strip()

    def pid(self, name: str) -> int:
        return int(self.run("inspect", "-f", "{{.State.Pid}}", name).stdout.strip())

    def exec(self, name: str, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run("exec", name, *cmd, check=check)


def _pids_using(directory: str) -> list[int]:
    out = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            cmd = open(f"/proc/{p}/cmdline", "rb").read()
        except OSError:
            continue
        if directory.encode() in cmd:
            out.append(int(p))
    return out
