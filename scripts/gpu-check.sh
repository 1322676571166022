#!/usr/bin/env bash
# The GPU-side check, for a machine with an NVIDIA GPU and its driver, Python and PyTorch, but no
# Rust toolchain and no network. It uses the prebuilt binaries in .gpu/ (make them with
# scripts/build-gpu-bundle.sh on a Rust machine and carry .gpu over):
#   1. the CUDA parity tests (.gpu/cuda-tests): every kernel, FP32 and TF32 tensor-core paths,
#      against the CPU backend;
#   2. the CUDA explainer tests (.gpu/cuda-explain-tests): SmoothGrad & co. maps against the CPU
#      explainer (1e-4 relative L2 in FP32, 5e-3 with TF32);
#      both with SMOOTHGRAD_REQUIRE_GPU=cuda: a missing device fails instead of skipping;
#   3. SmoothGrad n = 50 timed end to end by `smoothgrad bench --device cuda` (FP32 and TF32) on
#      the tiny, small and medium models of scripts/gpu_peers.py (exported with its weights);
#   4. PyTorch eager on the same GPU and models (scripts/gpu_peers.py: CUDA events; fp32, tf32,
#      bf16 autocast).
# Logs and JSON go to $OUT (the device runner's output folder) or .gpu/out. Each step has a time
# limit so the whole stays under 8 minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-.gpu/out}"
mkdir -p "$out"
status=0
samples="${SAMPLES:-50}"

echo "== device"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | tee "$out/device.txt" || true

run_tests() { # name, executable, time limit (s)
    local name=$1 exe=$2 limit=$3
    if [ ! -x "$exe" ]; then
        echo "!! no $exe: run scripts/build-gpu-bundle.sh on a Rust machine first"
        status=1
        return
    fi
    SMOOTHGRAD_REQUIRE_GPU=cuda SMOOTHGRAD_KERNEL_DIR="$PWD/kernels/cuda" \
        timeout "$limit" "$exe" --test-threads=1 --nocapture > "$out/$name.log" 2>&1
    local code=$?
    grep -E "^test |test result|max |worst|rel L2|skipped|panicked|gpu |device " "$out/$name.log" | tail -80
    if [ $code -ne 0 ]; then
        echo "!! $name failed (exit $code): see $out/$name.log"
        status=1
    fi
}

echo "== 1. CUDA kernel parity with the CPU backend (FP32 and TF32)"
run_tests parity .gpu/cuda-tests 150

echo "== 2. CUDA explainer maps against the CPU explainer"
run_tests explain .gpu/cuda-explain-tests 60

echo "== 3. smoothgrad SmoothGrad n=$samples on CUDA"
if [ -x .gpu/smoothgrad ] && timeout 60 python3 scripts/gpu_peers.py --export .gpu/models > "$out/export.log" 2>&1; then
    for model in tiny small medium; do
        for precision in fp32 tf32; do
            timeout 60 .gpu/smoothgrad bench --model ".gpu/models/$model.safetensors" \
                --arch ".gpu/models/$model.arch.json" --device cuda --precision "$precision" \
                --samples "$samples" --runs 10 --warmup 2 --memory-budget 8192 \
                --json "$out/smoothgrad-$model-$precision.json" > "$out/smoothgrad-$model-$precision.log" 2>&1
            code=$?
            line=$(grep -E "time per image" "$out/smoothgrad-$model-$precision.log" | head -1)
            rate=$(grep -E "images/s" "$out/smoothgrad-$model-$precision.log" | head -1)
            echo "  $model $precision: ${line# } |${rate}"
            if [ $code -ne 0 ]; then
                echo "!! bench $model $precision failed (exit $code): $(tail -1 "$out/smoothgrad-$model-$precision.log")"
                status=1
            fi
        done
    done
else
    echo "!! no .gpu/smoothgrad, or the model export failed (see $out/export.log)"
    status=1
fi

echo "== 4. PyTorch eager on the same GPU"
timeout 240 python3 scripts/gpu_peers.py --samples "$samples" --runs 10 --warmup 3 \
    --json "$out/torch-peers.json" 2>&1 | tee "$out/torch-peers.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

echo
echo "Results in $out; copy the tables into docs/gpu-results.md."
exit $status
