#!/usr/bin/env bash
# Installs every Debian package lowrank needs, by name. Idempotent; uses sudo when not root.
set -euo pipefail
PACKAGES=(
  build-essential cmake ccache git pkg-config
  libtorch-dev libgloo-dev          # tensors, autograd, optimizers, c10d + gloo headers
  libgtest-dev libgmock-dev libbenchmark-dev
  libcli11-dev nlohmann-json3-dev
  zlib1g-dev                        # gzip IDX dataset files (data/idx_reader.cpp)
  dataset-fashion-mnist             # real data: /usr/share/datasets/fashion-mnist
  gnuplot-nox                       # plots (counterexample, benchmarks)
  iproute2                          # network-namespace test of multi-machine training
  python3-torch                     # only to regenerate reference values (tools/)
)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#PACKAGES[@]} packages present"
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "setup: installing ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
