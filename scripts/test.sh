#!/usr/bin/env bash
# The test command. Installs, when missing, what the GPU-side tests need on a machine without a
# GPU — Mesa's software Vulkan driver (lavapipe) for the WGSL kernels, and ptxas (PyPI package
# nvidia-cuda-nvcc-cu12, in a private virtualenv) to assemble the PTX — then runs every test of
# the workspace with every feature. Without root or network those tests print "skipped" instead.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! ldconfig -p 2>/dev/null | grep -q libvulkan_lvp && [ ! -e /usr/share/vulkan/icd.d/lvp_icd.x86_64.json ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "== installing Mesa's software Vulkan driver (lavapipe)"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mesa-vulkan-drivers libvulkan1 >/dev/null
    fi
fi
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
export WGPU_BACKEND="${WGPU_BACKEND:-vulkan}"

if [ -z "${PTXAS:-}" ] && ! command -v ptxas >/dev/null; then
    venv="${SMOOTHGRAD_PTX_VENV:-$HOME/.cache/smoothgrad/ptx-venv}"
    if [ ! -x "$venv/bin/python" ]; then
        echo "== installing ptxas (nvidia-cuda-nvcc-cu12) into $venv"
        python3 -m venv "$venv" && "$venv/bin/pip" install -q nvidia-cuda-nvcc-cu12 || true
    fi
    if [ -x "$venv/bin/python" ]; then
        dir=$("$venv/bin/python" -c 'import nvidia.cuda_nvcc as m; print(m.__path__[0])' 2>/dev/null || true)
        [ -n "$dir" ] && [ -x "$dir/bin/ptxas" ] && export PTXAS="$dir/bin/ptxas"
    fi
fi

cargo test --workspace --all-features

# The PTX kernels' logic, run by the PTX interpreter (no GPU needed; see tools/ptxemu/README.md).
if command -v python3 >/dev/null; then
    echo "== PTX interpreter checks"
    python3 tools/ptxemu/test_basic.py
    python3 tools/ptxemu/test_rest.py
    python3 tools/ptxemu/test_tf32.py
fi
