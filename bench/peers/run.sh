#!/usr/bin/env bash
# The peer comparison in one command: Python with PyTorch, Captum and JAX, smoothgrad in
# release, then each implementation timed in its own process. See README.md.
#
#   bench/peers/run.sh [--models tiny,small,medium] [--runs 5] [--warmup 1] [--memory-budget MB]
#
# SMOOTHGRAD_PEERS_PYTHON=/path/to/python uses an existing interpreter instead of bench/peers/.venv.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"

if [[ -n "${SMOOTHGRAD_PEERS_PYTHON:-}" ]]; then
    python="$SMOOTHGRAD_PEERS_PYTHON"
else
    venv="$here/.venv"
    if [[ ! -x "$venv/bin/python" ]]; then
        echo "creating $venv"
        python3 -m venv "$venv"
    fi
    python="$venv/bin/python"
    if ! "$python" -c "import torch, captum, jax, numpy, onnx, onnxscript" 2>/dev/null; then
        echo "installing the peers into $venv (PyTorch, Captum, JAX from PyPI)"
        "$python" -m pip install --upgrade pip
        # SMOOTHGRAD_PEERS_PIP_ARGS, e.g. "--extra-index-url https://download.pytorch.org/whl/cpu"
        # for the CPU-only PyTorch wheel.
        # shellcheck disable=SC2086
        "$python" -m pip install ${SMOOTHGRAD_PEERS_PIP_ARGS:-} -r "$here/requirements.txt"
    fi
fi
if ! "$python" -c "import torch, captum, jax, numpy, onnx" 2>/dev/null; then
    echo "error: $python lacks one of torch, captum, jax, numpy, onnx (pip install -r $here/requirements.txt)" >&2
    exit 1
fi

(cd "$root" && cargo build --release -p smoothgrad-cli)
target_dir="${CARGO_TARGET_DIR:-$root/target}"
exec "$python" "$here/harness.py" --binary "$target_dir/release/smoothgrad" "$@"
