#!/usr/bin/env bash
# Builds, on a machine with Rust (no GPU needed), what scripts/gpu-check.sh runs on a GPU machine
# that has no Rust toolchain: the CUDA parity tests as a release test executable, and the
# `smoothgrad` binary when the CLI has a `cuda` feature. Everything goes to .gpu/ (ignored by
# git); carry .gpu to the GPU machine beside a checkout of the same commit.
#
#   cargo test -p smoothgrad-autodiff --features cuda --release --no-run   (what this runs)
#   -> .gpu/cuda-tests            the tests/cuda.rs executable (PTX compiled in)
#   -> .gpu/smoothgrad            `smoothgrad bench --device cuda`, if the CLI supports it
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .gpu

echo "== building the CUDA parity tests (release)"
json=$(cargo test -p smoothgrad-autodiff --features cuda --release --no-run --message-format=json 2>/dev/null)
exe=$(printf '%s\n' "$json" | python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "cuda":
        print(m["executable"])
')
if [ -z "$exe" ]; then
    echo "no test executable named cuda was built" >&2
    exit 1
fi
cp "$exe" .gpu/cuda-tests
echo "   .gpu/cuda-tests <- $exe"

if grep -q '^cuda *=' crates/cli/Cargo.toml 2>/dev/null; then
    echo "== building smoothgrad with --features cuda (release)"
    cargo build -p smoothgrad-cli --release --features cuda
    cp target/release/smoothgrad .gpu/smoothgrad
    echo "   .gpu/smoothgrad"
else
    rm -f .gpu/smoothgrad
    echo "== the CLI has no cuda feature yet: no smoothgrad binary in the bundle"
fi

echo
echo "Carry to the GPU machine: .gpu ($(du -sh .gpu | cut -f1)), beside this checkout"
echo "(kernels/cuda, scripts/gpu-check.sh, scripts/gpu_peers.py, assets/). Then run:"
echo "  bash scripts/gpu-check.sh"
