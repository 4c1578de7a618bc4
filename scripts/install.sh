#!/usr/bin/env bash
# Install or remove the `tcflow` command for root, independent of this clone:
# a venv of its own under $TCFLOW_PREFIX (default /opt/tcflow) with tcflow
# copied in (not linked to the clone), the command linked into $TCFLOW_BINDIR
# (default /usr/local/sbin, which sudo's secure_path keeps), bash, zsh and fish completion,
# and the manual page tcflow(8) (`man tcflow`; section 8 comes before the
# C library's tcflow(3)). Re-run after changing the code; it reinstalls only
# when the package's files changed.
#
#   scripts/install.sh            install (make setup runs this)
#   scripts/install.sh uninstall  remove all of it (pins and attachments are
#                                 left alone: `tcflow detach --all` first)
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=${TCFLOW_PREFIX:-/opt/tcflow}
bindir=${TCFLOW_BINDIR:-/usr/local/sbin}
compdir=${TCFLOW_COMPDIR:-/usr/share/bash-completion/completions}
mandir=${TCFLOW_MANDIR:-/usr/local/share/man}
zshdir=${TCFLOW_ZSHDIR:-/usr/local/share/zsh/site-functions}
fishdir=${TCFLOW_FISHDIR:-/usr/local/share/fish/vendor_completions.d}

if [ "${1:-install}" = uninstall ]; then
  rm -f "$bindir/tcflow" "$compdir/tcflow" "$mandir/man8/tcflow.8" "$zshdir/_tcflow" "$fishdir/tcflow.fish"
  rm -rf "$prefix"
  echo "tcflow: removed $prefix, $bindir/tcflow, the completions and the manual page"
  exit 0
fi

stamp=$(find tcflow pyproject.toml README.md LICENSE LICENSES -type f -not -path '*/__pycache__/*' -print0 \
        | sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)
if [ ! -x "$prefix/bin/tcflow" ] || [ "$(cat "$prefix/.stamp" 2>/dev/null)" != "$stamp" ]; then
  echo "tcflow setup: installing the tcflow command into $prefix"
  rm -rf "$prefix"
  # Debian's bcc is for /usr/bin/python3; --system-site-packages lets the venv see it
  /usr/bin/python3 -m venv --system-site-packages "$prefix"
  "$prefix/bin/pip" install -q --disable-pip-version-check --no-cache-dir . >/dev/null
  rm -rf build  # setuptools' scratch copy, not needed once installed
  echo "$stamp" > "$prefix/.stamp"
  chmod -R go-w "$prefix"
fi
mkdir -p "$bindir" "$compdir"
ln -sfn "$prefix/bin/tcflow" "$bindir/tcflow"
"$prefix/bin/tcflow" completion bash > "$compdir/tcflow"
mkdir -p "$zshdir" "$fishdir"
"$prefix/bin/tcflow" completion zsh > "$zshdir/_tcflow"
"$prefix/bin/tcflow" completion fish > "$fishdir/tcflow.fish"
mkdir -p "$mandir/man8"
"$prefix/bin/python" -m tcflow.cli.manpage > "$mandir/man8/tcflow.8"
