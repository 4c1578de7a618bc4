#!/usr/bin/env bash
# `make image`: build the DaemonSet's image, tcflow:VERSION, with the docker
# on this machine ($DOCKER_HOST or the default socket).
#
# The base is Debian 12 made here, not pulled (no registry is needed): the
# first run debootstraps a minbase root filesystem from Debian's mirror and
# imports it as tcflow-base:bookworm; later runs reuse it. To build on
# another base: BASE=debian:bookworm-slim scripts/image.sh
# The build's RUN steps use the host's network (--network host), so no
# bridge or NAT is needed in dockerd.
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' tcflow/model/version.py)
[ -n "$version" ] || { echo "tcflow image: no __version__ in tcflow/model/version.py" >&2; exit 1; }
base=${BASE:-tcflow-base:bookworm}
docker=${DOCKER:-docker}

if [ "$base" = tcflow-base:bookworm ] && ! $docker image inspect "$base" >/dev/null 2>&1; then
  command -v debootstrap >/dev/null || apt-get install -y -qq debootstrap >/dev/null
  root=$(mktemp -d /tmp/tcflow-base.XXXXXX)
  trap 'rm -rf "$root"' EXIT  # replaced below, with the same cleanup
  echo "tcflow image: making $base with debootstrap (Debian 12 minbase)"
  debootstrap --variant=minbase bookworm "$root" http://deb.debian.org/debian >/dev/null
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  tar -C "$root" -c . | $docker import -c 'CMD ["/bin/bash"]' - "$base" >/dev/null
fi
# The build context: the Dockerfile and wheels of tcflow and its dependencies,
# built here, so that the image build needs no PyPI access of its own.
ctx=$(mktemp -d /tmp/tcflow-image.XXXXXX)
trap 'rm -rf "$ctx" ${root:+"$root"}' EXIT
pip=/usr/bin/python3
[ -x .venv/bin/python ] && pip=.venv/bin/python
"$pip" -m pip wheel -q --disable-pip-version-check -w "$ctx/wheels" . >/dev/null
rm -rf build
cp deploy/Dockerfile "$ctx/"
echo "tcflow image: building tcflow:$version on $base"
$docker build --network host --build-arg BASE="$base" -t "tcflow:$version" "$ctx"
echo "tcflow image: tcflow:$version"
