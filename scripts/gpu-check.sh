#!/usr/bin/env bash
# The GPU-side check, for a machine with an NVIDIA GPU and its driver, Python and PyTorch, but no
# Rust toolchain and no network. It uses the prebuilt binaries in .gpu/ (make them with
# scripts/build-gpu-bundle.sh on a Rust machine and carry .gpu over):
#   1. the CUDA parity tests (.gpu/cuda-tests) with SMOOTHGRAD_REQUIRE_GPU=cuda: every kernel
#      against the CPU backend; a missing device fails instead of skipping;
#   2. if .gpu/smoothgrad exists and accepts `bench --device cuda`: SmoothGrad timed on the GPU;
#   3. PyTorch eager on the same GPU (scripts/gpu_peers.py): tiny, small, medium models, n = 50.
# Logs and JSON go to $OUT (the device runner's output folder) or .gpu/out. About 5 minutes;
# each step has a time limit so the whole stays under 8.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-.gpu/out}"
mkdir -p "$out"
status=0

echo "== device"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | tee "$out/device.txt" || true

echo "== 1. CUDA kernel parity with the CPU backend"
if [ -x .gpu/cuda-tests ]; then
    SMOOTHGRAD_REQUIRE_GPU=cuda SMOOTHGRAD_KERNEL_DIR="$PWD/kernels/cuda" \
        timeout 240 .gpu/cuda-tests --test-threads=1 --nocapture > "$out/parity.log" 2>&1
    code=$?
    grep -E "^test |test result|max |skipped|panicked|gpu |device " "$out/parity.log" | tail -60
    if [ $code -ne 0 ]; then
        echo "!! parity tests failed (exit $code): see $out/parity.log"
        status=1
    fi
else
    echo "!! no .gpu/cuda-tests: run scripts/build-gpu-bundle.sh on a Rust machine first"
    status=1
fi

echo "== 2. smoothgrad SmoothGrad on CUDA"
if [ -x .gpu/smoothgrad ]; then
    timeout 90 .gpu/smoothgrad bench --model assets/digits-cnn.onnx --device cuda \
        --samples 50 --runs 10 --json "$out/smoothgrad-cuda.json" 2>&1 | tee "$out/smoothgrad-cuda.log" \
        || echo "   (no CUDA explanation path in this binary yet, or it failed: see the log)"
else
    echo "   skipped: no .gpu/smoothgrad (the explanation path on CUDA comes later)"
fi

echo "== 3. PyTorch eager on the same GPU"
timeout 300 python3 scripts/gpu_peers.py --samples 50 --json "$out/torch-peers.json" 2>&1 | tee "$out/torch-peers.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

echo
echo "Results in $out; copy the tables into docs/gpu-results.md."
exit $status
