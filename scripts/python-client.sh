#!/usr/bin/env bash
# Installs the Python LanceDB client the interoperability test runs against
# (lancedb 0.40.0, which embeds Lance 13) into a virtual environment under
# the project's cache, once, and prints its python's path.
#
#   LANCEDB_MIGRATE_PYTHON="$(scripts/python-client.sh)" scripts/cargo test --workspace interop
set -euo pipefail
version="0.40.0"
venv="${LANCEDB_MIGRATE_PY_VENV:-$HOME/.cache/lancedb-migrate/py/lancedb-$version}"
python="$venv/bin/python"
if ! "$python" -c "import lancedb, sys; sys.exit(lancedb.__version__ != '$version')" 2>/dev/null; then
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check "lancedb==$version" >&2
fi
"$python" -c "import lancedb; assert lancedb.__version__ == '$version'" >&2
echo "$python"
