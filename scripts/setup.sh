#!/usr/bin/env bash
# Installs the Debian packages Lamina builds with (only those missing), then configures and
# builds into ./build. CUDA is compiled when nvcc is found (one architecture: sm_90a by default;
# set CUDA_ARCHS="80;89;90a" for other GPUs).
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(cmake ninja-build g++ ccache pkg-config nlohmann-json3-dev libcli11-dev libonig-dev libgtest-dev
          libgmock-dev libcpp-httplib-dev)
# Open MPI: lamina loads libmpi at run time only under mpirun; tests/cli/test_cli_mpi.cpp runs
# `mpirun -n 2 lamina run` with it (and skips without it).
PACKAGES+=(openmpi-bin libopenmpi3)
# node/npm fetch the reference tokenizer for tests; they may come from outside Debian.
command -v npm >/dev/null 2>&1 || PACKAGES+=(nodejs npm)
missing=()
for p in "${PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  echo "[setup] installing: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# nvcc is often installed outside PATH.
if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then export PATH=/usr/local/cuda/bin:$PATH; fi
BUILD_DIR=${BUILD_DIR:-build}
CUDA_ARCHS=${CUDA_ARCHS:-90a}
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES="$CUDA_ARCHS" \
      ${LAMINA_CMAKE_ARGS:-} >/dev/null
cmake --build "$BUILD_DIR" -j "$(nproc)"
