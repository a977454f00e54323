#!/usr/bin/env bash
# Installs every Debian package lowrank needs, by name. Idempotent; uses sudo when not root.
set -euo pipefail
PACKAGES=(
  build-essential cmake ccache git pkg-config
  libtorch-dev libgloo-dev          # tensors, autograd, optimizers, c10d + gloo headers
  libopenblas0-pthread              # optimized BLAS for torch (docs/performance.md: the reference BLAS is ~2x slower)
  libgtest-dev libgmock-dev libbenchmark-dev
  libcli11-dev nlohmann-json3-dev
  zlib1g-dev                        # gzip IDX dataset files (src/data/idx_reader.cpp)
  dataset-fashion-mnist             # real data: /usr/share/datasets/fashion-mnist
  bible-kjv bible-kjv-text          # real English text for the language model (src/data/text_corpus.cpp)
  libsentencepiece-dev              # its tokenizer (src/data/tokenizer.cpp)
  gnuplot-nox                       # plots (counterexample, benchmarks)
  iproute2                          # network-namespace test of multi-machine training
  python3-torch python3-dev pybind11-dev   # the Python module (python/, docs/python.md) and reference values (tools/)
)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#PACKAGES[@]} packages present"
else
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Debian's libtorch loads libblas.so.3, liblapack.so.3 and libopenblas.so.0 through the
# alternatives system, which may point at the reference BLAS or at another OpenBLAS build. Select
# the pthread build of OpenBLAS for all three: measured against the OpenMP build, `lowrank train`
# with 2 workers takes 24-31 s instead of 36-47 s (its OpenMP threads compete with torch's), and the
# reference BLAS 50 s (docs/performance.md). lowrank sets its thread count to --threads itself.
MULTIARCH=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || gcc -print-multiarch)
for lib in libblas.so.3 liblapack.so.3 libopenblas.so.0; do
  want=/usr/lib/$MULTIARCH/openblas-pthread/$lib
  link=$lib-$MULTIARCH
  if [ -e "$want" ] && [ "$(readlink -f "/etc/alternatives/$link")" != "$want" ]; then
    $SUDO update-alternatives --quiet --set "$link" "$want"
    echo "setup: $lib -> $want"
  fi
done
