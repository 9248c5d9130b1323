#!/usr/bin/env bash
# The GPU check (bench/gpu_check.py) on a machine with NVIDIA GPUs, in one command.
#
#   bench/gpu_check.sh wheels        here, with network: the wheels a bare GPU image lacks, into .whl/
#   bench/gpu_check.sh [options]     there: installs .whl/ if present, then torchrun on every GPU
#
# A GPU image with PyTorch usually lacks pydantic (lmforge's config) and its helpers; the versions
# fetched are the ones this checkout's .venv holds, for the device's Python (3.12 by default).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = wheels ]; then
  py=${GPU_PYTHON_VERSION:-3.12}
  pins=$(.venv/bin/python -m pip freeze | grep -iE '^(pydantic|pydantic[-_]core|annotated[-_]types|typing[-_]inspection)==')
  rm -rf .whl && mkdir .whl
  for pin in $pins; do
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$py" --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl "$pin"
  done
  ls .whl
  exit 0
fi
if compgen -G ".whl/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gpu-check-site .whl/*.whl
  export PYTHONPATH=/tmp/gpu-check-site${PYTHONPATH:+:$PYTHONPATH}
fi
gpus=$(nvidia-smi -L | wc -l)
export PYTHONUNBUFFERED=1 DO_NOT_TRACK=true
exec python3 -m torch.distributed.run --standalone --nproc_per_node="$gpus" bench/gpu_check.py "$@"
