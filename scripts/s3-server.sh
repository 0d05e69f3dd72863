#!/usr/bin/env bash
# The local S3 server of the object-storage tests and benchmarks: moto 5.2.1
# behind scripts/s3-server.py (writes serialised, per-bucket latency and
# header stripping, request log). Installs it once into the project's cache.
#
#   export LANCEDB_MIGRATE_S3="$(scripts/s3-server.sh start)"   # prints the endpoint
#   scripts/cargo test --workspace
#   scripts/s3-server.sh stop "$LANCEDB_MIGRATE_S3"
#
# `start` keeps the server running until `stop`, or until the process that
# ran `start` (its parent shell) exits.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
version="5.2.1"
venv="${LANCEDB_MIGRATE_S3_VENV:-$HOME/.cache/lancedb-migrate/py/moto-$version}"
python="$venv/bin/python"
state="${XDG_RUNTIME_DIR:-/tmp}/lancedb-migrate-s3"

install() {
  if ! "$python" -c "import importlib.metadata as m, sys; sys.exit(m.version('moto') != '$version')" 2>/dev/null; then
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$version" >&2
  fi
}

case "${1:-}" in
  start)
    install
    port="$("$python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    mkdir -p "$state"
    log="$state/$port.log"
    "$python" "$root/scripts/s3-server.py" --port "$port" --exit-with "$PPID" >"$log" 2>&1 &
    echo $! >"$state/$port.pid"
    for _ in $(seq 1 100); do
      if "$python" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/_lmt/ping', timeout=1)" 2>/dev/null; then
        echo "http://127.0.0.1:$port"
        exit 0
      fi
      sleep 0.2
    done
    echo "the S3 server did not start; its log:" >&2
    cat "$log" >&2
    exit 1
    ;;
  stop)
    port="${2:?usage: s3-server.sh stop ENDPOINT}"
    port="${port##*:}"
    if [ -f "$state/$port.pid" ]; then
      kill "$(cat "$state/$port.pid")" 2>/dev/null || true
      rm -f "$state/$port.pid" "$state/$port.log"
    fi
    ;;
  install)
    install
    echo "$python"
    ;;
  *)
    echo "usage: $0 start | stop ENDPOINT | install" >&2
    exit 2
    ;;
esac
