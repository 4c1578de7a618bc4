"""`make image-proof`: the DaemonSet's image, run as the DaemonSet runs it,
with exactly the capabilities deploy/daemonset.yaml grants (`--cap-drop ALL`
plus its `add` list), a read-only root file system and the runtime's default
seccomp profile, counts two containers of another Docker by name.

    make image && make image-proof        (root; DOCKER_HOST picks the docker that has the image)

The two containers live in a private dockerd (tests/support/docker.py: its
own data root, socket and network namespace, an --internal network in
198.18.200.0/24), which pings between them. tcflow's container runs with
--pid host and --network host, bpffs, /lib/modules, its cache and run
directories, and that dockerd's data root read-only (for the names), then
serves on 127.0.0.1:19462; this prints its log, the caps it ran with, and
the web container's ICMP lines of /metrics. Everything is removed after.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from tests.support.docker import Dockerd  # noqa: E402

PORT = 19462
PIN_DIR = "/sys/fs/bpf/tcflow-proof"
NAME = "tcflow-proof"


def daemonset() -> tuple[list[str], list[str]]:
    """The DaemonSet's capabilities and its container's arguments (without the web config)."""
    import yaml

    docs = list(yaml.safe_load_all(open(os.path.join(REPO, "deploy", "daemonset.yaml"))))
    pod = next(d for d in docs if d and d.get("kind") == "DaemonSet")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    ctx = container["securityContext"]
    assert ctx["capabilities"]["drop"] == ["ALL"] and not ctx.get("privileged")
    return ctx["capabilities"]["add"], container["args"]


def main() -> int:
    version = re.search(r'__version__ = "(.*)"', open(os.path.join(REPO, "tcflow", "model", "version.py")).read())
    image = f"tcflow:{version.group(1) if version else '?'}"
    docker = ["docker"]
    if subprocess.run([*docker, "image", "inspect", image], capture_output=True).returncode != 0:
        print(f"image-proof: no image {image}: run `make image` first (with the same DOCKER_HOST)", file=sys.stderr)
        return 1
    add, args = daemonset()
    kept, skip = [], False
    for a in args:  # TLS and auth are proven elsewhere (tests/netns/test_webconfig.py): plain HTTP on loopback
        if skip or a in ("--web.listen-address", "--web.config.file"):
            skip = not skip
            continue
        kept.append(a)
    peers = Dockerd("tcfproof-")
    cache = "/var/cache/tcflow"
    os.makedirs(cache, mode=0o700, exist_ok=True)
    try:
        peers.start()
        peers.container("tcfproof-db", "198.18.200.11")
        peers.container("tcfproof-web", "198.18.200.10", "sh", "-c", "sleep 8; ping -c 5 -i 0.2 198.18.200.11; "
                        "sleep 3600")
        data = os.path.join(peers.dir, "data")
        cmd = [*docker, "run", "-d", "--name", NAME, "--pid", "host", "--network", "host",
               "--cap-drop", "ALL", *(x for c in add for x in ("--cap-add", c)), "--read-only",
               "--tmpfs", "/tmp",
               "-v", "/sys/fs/bpf:/sys/fs/bpf", "-v", "/lib/modules:/lib/modules:ro",
               "-v", f"{cache}:{cache}", "-v", "/run/tcflow:/run/tcflow", "-v", f"{data}:{data}:ro",
               image, *kept, "--pin-dir", PIN_DIR, "--listen", f"127.0.0.1:{PORT}"]
        print("$ " + " ".join(cmd[1:]).replace(peers.dir, "$PEERS"))
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        metrics = ""
        for _ in range(120):
            time.sleep(0.5)
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/metrics", timeout=5) as r:
                    metrics = r.read().decode()
            except OSError:
                continue
            icmp = [ln for ln in metrics.splitlines() if ln.startswith("tcflow_packets_total{")
                    and 'container="tcfproof-web"' in ln and 'protocol="other"' in ln and 'family="ipv4"' in ln]
            if len(icmp) == 2 and all(ln.endswith(" 5.0") for ln in icmp):
                break
        pid = subprocess.run([*docker, "inspect", "-f", "{{.State.Pid}}", NAME], capture_output=True,
                             text=True).stdout.strip()
        status = "".join(f"tcflow (pid {pid}) {ln}\n" for ln in open(f"/proc/{pid}/status").read().splitlines()
                         if ln.split(":")[0] in ("Uid", "CapEff", "CapBnd", "Seccomp"))
        decoded = subprocess.run(["capsh", "--decode=" + status.split("CapBnd:")[1].split()[0]],
                                 capture_output=True, text=True).stdout
        status += f"tcflow (pid {pid}) bounding set {decoded.split('=', 1)[-1].strip()}\n"
        subprocess.run([*docker, "stop", "-t", "20", NAME], capture_output=True)  # SIGTERM, as a pod's deletion
        code = subprocess.run([*docker, "inspect", "-f", "{{.State.ExitCode}}", NAME], capture_output=True,
                              text=True).stdout.strip()
        log = subprocess.run([*docker, "logs", NAME], capture_output=True, text=True)
        print(log.stdout + log.stderr, end="")
        print(status, end="")
        icmp = [ln for ln in metrics.splitlines() if ln.startswith("tcflow_packets_total{")
                and 'container="tcfproof-web"' in ln and 'protocol="other"' in ln and 'family="ipv4"' in ln]
        print("\n".join(icmp))
        print(f"tcflow's container exited {code} on SIGTERM")
        ok = len(icmp) == 2 and all(ln.endswith(" 5.0") for ln in icmp) and code == "0"
        print("image-proof: " + ("ok" if ok else "FAILED: the web container's 5 pings were not counted, "
                                 "or tcflow did not stop cleanly"))
        return 0 if ok else 1
    finally:
        subprocess.run([*docker, "stop", "-t", "10", NAME], capture_output=True)
        subprocess.run([*docker, "rm", "-f", NAME], capture_output=True)
        subprocess.run([sys.executable, "-m", "tcflow", "detach", "--all", "--pin-dir", PIN_DIR],
                       capture_output=True, cwd=REPO)
        peers.close()


if __name__ == "__main__":
    sys.exit(main())
