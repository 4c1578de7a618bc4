#!/usr/bin/env bash
# Install what tcflow needs on a Debian machine, as root, then build .venv.
# Idempotent and quick the second time: apt runs only for missing packages,
# pip only when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "tcflow setup: error: run as root (sudo make ...): it installs packages and loads BPF programs" >&2
  exit 1
fi

pkgs="python3-bpfcc python3-venv python3-pip libbpf1 iproute2 ethtool tcpdump iputils-ping"
# for the tests and `make bench`: traffic, promtool (Debian's prometheus), a headless browser, man,
# and the shells whose completion tcflow writes
pkgs="$pkgs iperf3 prometheus chromium chromium-driver bpftool bash-completion tmux man-db zsh fish"
# for the container tests: a real Docker (dockerd, containerd, runc), started by
# the tests themselves, and a static busybox to build their image from
pkgs="$pkgs docker.io busybox-static"
# Kernel headers for bcc: the running kernel's if Debian has them, else the
# generic flavour (tcflow then merges Debian's split header tree itself; see
# tcflow/bpf/kheaders.py). Skipped when real headers are installed already.
if [ ! -e "/lib/modules/$(uname -r)/build/include/linux/kconfig.h" ] && [ -z "${BCC_KERNEL_SOURCE:-}" ]; then
  pkgs="$pkgs linux-headers-amd64"
fi
missing=""
for p in $pkgs; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "tcflow setup: installing Debian packages:$missing"
  apt-get update -qq
  want=""
  for p in $missing; do
    if [ "$p" = linux-headers-amd64 ] && apt-cache show "linux-headers-$(uname -r)" >/dev/null 2>&1; then
      p="linux-headers-$(uname -r)"
    fi
    want="$want $p"
  done
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $want >/dev/null
fi

# bpffs, for --pin: root-only (mode 0700), as systemd mounts it. An earlier
# set-up left it world-writable (1777); that is put right here.
if ! mountpoint -q /sys/fs/bpf; then
  mount -t bpf bpf /sys/fs/bpf -o mode=0700
elif [ "$(stat -c %a /sys/fs/bpf)" = 1777 ]; then
  chmod 0700 /sys/fs/bpf  # a remount with mode= does not change bpffs's root (kernel 6.18)
fi

# Debian's bcc is installed for Debian's /usr/bin/python3: build the venv from
# that interpreter with --system-site-packages so `import bcc` works in it.
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import bcc' 2>/dev/null; then
  rm -rf .venv
  /usr/bin/python3 -m venv --system-site-packages .venv
fi
if [ ! -f .venv/.stamp ] || [ pyproject.toml -nt .venv/.stamp ]; then
  .venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
  touch .venv/.stamp
fi

# The command itself, on root's PATH and under sudo: scripts/install.sh.
bash scripts/install.sh
