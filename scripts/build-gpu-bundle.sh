#!/usr/bin/env bash
# Builds, on a machine with Rust (no GPU needed), what scripts/gpu-check.sh runs on a GPU machine
# that has no Rust toolchain. Everything goes to .gpu/ (ignored by git); carry .gpu to the GPU
# machine beside a checkout of the same commit.
#
#   -> .gpu/cuda-tests           crates/autodiff/tests/cuda.rs, release: every kernel vs the CPU
#   -> .gpu/cuda-explain-tests   tests/cuda_explain.rs, release: CudaExplainer maps vs the CPU
#   -> .gpu/smoothgrad           the CLI with --features cuda: `bench --device cuda`
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .gpu

# The executable of test target $1 from `cargo test ... --no-run` with the remaining arguments.
test_exe() {
    local name=$1
    shift
    cargo test "$@" --release --no-run --message-format=json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == sys.argv[1]:
        print(m["executable"])
' "$name"
}

echo "== building the CUDA parity tests (release)"
exe=$(test_exe cuda -p smoothgrad-autodiff --features cuda --test cuda)
[ -n "$exe" ] || { echo "no test executable named cuda was built" >&2; exit 1; }
cp "$exe" .gpu/cuda-tests
echo "   .gpu/cuda-tests <- $exe"

echo "== building the CUDA explainer tests (release)"
exe=$(test_exe cuda_explain -p smoothgrad-tests --features cuda --test cuda_explain)
[ -n "$exe" ] || { echo "no test executable named cuda_explain was built" >&2; exit 1; }
cp "$exe" .gpu/cuda-explain-tests
echo "   .gpu/cuda-explain-tests <- $exe"

echo "== building smoothgrad with --features cuda (release)"
cargo build -p smoothgrad-cli --release --features cuda
cp target/release/smoothgrad .gpu/smoothgrad
echo "   .gpu/smoothgrad"

echo
echo "Carry to the GPU machine: .gpu ($(du -sh .gpu | cut -f1)), beside this checkout"
echo "(kernels/cuda, scripts/gpu-check.sh, scripts/gpu_peers.py, assets/). Then run:"
echo "  bash scripts/gpu-check.sh"
