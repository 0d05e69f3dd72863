#!/usr/bin/env bash
# Makes sure tmux is installed, for the command-line test that runs `up` in
# a real terminal and presses Ctrl-C in it (tests/it/cli.rs). Installs
# Debian's package with apt-get when it is missing (as root, or with sudo),
# waiting for another apt-get to finish first.
#
#   scripts/tmux.sh && LANCEDB_MIGRATE_REQUIRE_TMUX=1 scripts/cargo test --workspace cli::
set -euo pipefail
if command -v tmux >/dev/null 2>&1; then
  tmux -V
  exit 0
fi
sudo=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "tmux is missing and this user cannot install it" >&2; exit 1; }
  sudo="sudo -n"
fi
echo "tmux not found; installing it with apt-get" >&2
wait_lock=(-o DPkg::Lock::Timeout=300)
$sudo apt-get "${wait_lock[@]}" update -qq >/dev/null
$sudo env DEBIAN_FRONTEND=noninteractive apt-get "${wait_lock[@]}" install -y -qq tmux >/dev/null
tmux -V
