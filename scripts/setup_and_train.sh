#!/usr/bin/env bash
# The main job on a fresh machine: a virtual environment, the data, then training the reference
# network (scripts/train.py; extra arguments go to it, e.g. --epochs 20 --device cuda).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
python -m pip install --quiet -e '.[plot]'

# A GPU with a working driver: gpucnn's extra for the CUDA major version the driver supports, which
# brings CuPy and CUDA's libraries (runtime, NVRTC, cuBLAS) from pip: the host needs only the driver.
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
  cuda_major=$(nvidia-smi | sed -n 's/.*CUDA Version: *\([0-9]*\).*/\1/p' | head -n 1)
  # A driver for CUDA 14 or later still runs CUDA 13 code; one older than CUDA 12 is not supported.
  if [ "${cuda_major:-0}" -ge 13 ]; then extra=cuda13; else extra=cuda12; fi
  [ "${cuda_major:-0}" -ge 12 ] || echo "warning: the driver reports CUDA '${cuda_major:-?}'; gpucnn needs CUDA 12 or 13"
  python -m pip install --quiet -e ".[plot,${extra}]" || echo "warning: gpucnn[${extra}] did not install; training on the CPU"
  python -m gpucnn doctor --quick || echo "warning: gpucnn doctor found a problem with the GPU path (see above)"
fi

# Debian ships Fashion-MNIST as a package; elsewhere the loader downloads the official files
# into ~/.cache/gpucnn and checks their SHA-256.
if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 \
    || { apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null; } \
    || echo "apt-get could not install dataset-fashion-mnist: the loader will download the data"
fi

python scripts/train.py "$@"
