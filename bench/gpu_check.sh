#!/usr/bin/env bash
# The GPU check: the CUDA tests and the GPU figures, in under 8 minutes, with the project's .venv. Installs nothing.
#
#   bench/gpu_check.sh            on a machine with a CUDA GPU
#   bench/gpu_check.sh --dry-run  anywhere: the same steps on the CPU with tiny sizes (the CUDA tests skip), to check
#                                 the script itself
#
# Tests: tests/core/test_cuda.py (reference parity on the GPU, training and resume on the GPU) and the
# rasterizer's GPU test. Figures (bench/gpu_figures.py): frame time at 512 px for the FFHQ-512 size and for the
# bundled model, peak GPU memory, mesh extraction time, training step time. Exit status: 0 when every step passed.
set -u
cd "$(dirname "$0")/.."
PY=.venv/bin/python
BUDGET_S=${GPU_CHECK_BUDGET_S:-480}
DRY=0
case "${1:-}" in
    --dry-run) DRY=1 ;;
    "") ;;
    *) echo "usage: bench/gpu_check.sh [--dry-run]" >&2; exit 2 ;;
esac

if [ ! -x "$PY" ]; then
    echo "gpu_check: there is no .venv here. Create it first with 'make test' (see README, Installing; on a CUDA"
    echo "machine with the CUDA build of torch, as below). This script installs nothing."
    exit 2
fi
if ! "$PY" -c "import pytest" 2>/dev/null; then
    echo "gpu_check: pytest is not in .venv; 'make test' installs it (requirements-dev.txt)."
    exit 2
fi

read -r TORCH_VERSION TORCH_CUDA CUDA_OK <<<"$("$PY" -c \
    'import torch; print(torch.__version__, torch.version.cuda or "none", int(torch.cuda.is_available()))')"
echo "gpu_check: torch $TORCH_VERSION, built for CUDA $TORCH_CUDA, GPU visible: $CUDA_OK"
if [ "$DRY" = 0 ]; then
    if [ "$TORCH_CUDA" = "none" ]; then
        cat <<EOF
gpu_check: the torch in .venv is a CPU build ($TORCH_VERSION), so it cannot use the GPU. Install the CUDA build
the way the README's "Installing" says, in a new .venv (the Makefile's TORCH and TORCH_INDEX pick the build):

    rm -rf .venv
    make test TORCH=torch==2.13.0 TORCH_INDEX="--index-url https://download.pytorch.org/whl/cu128"

(cu128 is CUDA 12.8; take the index for your driver from pytorch.org.) Then run bench/gpu_check.sh again.
Nothing was changed.
EOF
        exit 2
    fi
    if [ "$CUDA_OK" != 1 ]; then
        echo "gpu_check: torch $TORCH_VERSION is built for CUDA $TORCH_CUDA but sees no GPU: check nvidia-smi, the"
        echo "driver (it must support CUDA $TORCH_CUDA) and CUDA_VISIBLE_DEVICES. --dry-run checks the script on"
        echo "the CPU."
        exit 2
    fi
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
fi

START=$SECONDS
STATUS=0
remaining() { echo $(( BUDGET_S - (SECONDS - START) )); }

echo "== CUDA tests (they skip without a GPU)"
timeout "$(remaining)" "$PY" -m pytest -q -rs -p no:cacheprovider tests/core/test_cuda.py \
    "tests/core/test_rasterize.py::test_cuda_matches_cpu" || STATUS=1

echo "== GPU figures"
if [ "$(remaining)" -le 30 ]; then
    echo "gpu_check: no time left for the figures (budget ${BUDGET_S} s)"
    STATUS=1
elif [ "$DRY" = 1 ]; then
    timeout "$(remaining)" "$PY" bench/gpu_figures.py --dry-run || STATUS=1
else
    timeout "$(remaining)" "$PY" bench/gpu_figures.py --device cuda || STATUS=1
fi

echo "gpu_check: $([ $STATUS = 0 ] && echo passed || echo FAILED) in $((SECONDS - START)) s (budget ${BUDGET_S} s)"
exit $STATUS
