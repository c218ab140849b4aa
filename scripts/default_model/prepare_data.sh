#!/usr/bin/env bash
# Regenerates the training corpus of the bundled default model (models/lamina-tiny-llama) from
# public-domain English texts shipped in Debian 12 (bookworm) packages:
#   bible-kjv + bible-kjv-text  King James Version (1611; public domain, see its copyright file)
#   sword-text-web              World English Bible (dedicated to the public domain by eBible.org)
#   r-cran-janeaustenr          Jane Austen's six novels (texts public domain; package MIT)
#   dict-devil                  Ambrose Bierce, The Devil's Dictionary (1911; public domain)
# Tools used to read them: `bible` (bible-kjv), `mod2imp` (libsword-utils), Rscript (r-base-core).
# Writes scripts/default_model/data/corpus.jsonl.xz (git-ignored) and
# models/lamina-tiny-llama/heldout.txt (committed). Run as root (it apt-get installs the packages).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
raw="${RAW_DIR:-/tmp/lamina-default-model-raw}"
mkdir -p "$raw" "$here/data"

if [ "${SKIP_APT:-0}" != 1 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    bible-kjv bible-kjv-text libsword-utils sword-text-web r-base-core r-cran-janeaustenr dict-devil
fi

bible -l0 gen1:1-rev22:21 > "$raw/kjv.txt"
mod2imp engWEB2015eb > "$raw/web.imp"
Rscript -e 'library(janeaustenr);
  for (n in c("sensesensibility","prideprejudice","mansfieldpark","emma","northangerabbey","persuasion"))
    writeLines(get(n), file.path(commandArgs(TRUE)[1], paste0("austen_", n, ".txt")), useBytes=TRUE)' "$raw"
zcat /usr/share/dictd/devil.dict.dz > "$raw/devil.txt"

dpkg-query -W -f='${Package} ${Version}\n' bible-kjv-text sword-text-web r-cran-janeaustenr dict-devil \
  > "$here/data/SOURCES.txt" 2>/dev/null || true
python3 "$here/prepare_data.py" "$raw" "$repo"
