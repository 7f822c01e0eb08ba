#!/usr/bin/env bash
# bench/gpu_check.py on a GPU machine that gets only the checkout (no network): Python wheels the machine
# lacks travel in .whl/ (git-ignored) and Fashion-MNIST's IDX files in .data/fashion-mnist/ (git-ignored).
#   scripts/gpu_check.sh OUT_DIR [gpu_check.py options, e.g. --budget-s 380 --skip tests]
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: scripts/gpu_check.sh OUT_DIR [options]}
shift
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/kd-site \
        .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/kd-site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} KD_DATA_DIR=${KD_DATA_DIR:-$PWD/.data} PYTHONUNBUFFERED=1
mkdir -p "$out"
python3 bench/gpu_check.py --out "$out" "$@" 2>&1 | tee "$out/gpu_check.log"
