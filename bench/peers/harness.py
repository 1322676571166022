"""SmoothGrad (n = 50) on the same models, input and noise: Captum, batched PyTorch, JAX and
smoothgrad, one after the other, each in its own process. Run through `run.sh`, which sets up
Python and builds smoothgrad; see README.md.

Only numpy is imported here: the frameworks load in the subprocesses that time them.
"""

import argparse
import datetime
import json
import os
import pathlib
import platform
import subprocess
import sys

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
PEERS = [
    ("captum", "Captum NoiseTunnel(Saliency)"),
    ("torch", "PyTorch, batched autograd.grad"),
    ("jax", "JAX jit(vmap(grad))"),
]
AGREEMENT = 1e-3


def cpu_model():
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def median(values):
    return float(np.median(values))


def run(cmd, log):
    """Runs `cmd`, teeing its output to `log`; returns the error text, or None on success."""
    print("  $ " + " ".join(str(c) for c in cmd), flush=True)
    with open(log, "w") as out:
        done = subprocess.run([str(c) for c in cmd], stdout=out, stderr=subprocess.STDOUT)
    text = pathlib.Path(log).read_text()
    if done.returncode != 0:
        last = [line for line in text.splitlines() if line.strip()][-3:]
        return f"exit {done.returncode}: " + " / ".join(last)
    return None


def bench_model(name, args, out_dir):
    case = out_dir / name
    case.mkdir(parents=True, exist_ok=True)
    python = sys.executable
    print(f"== {name}", flush=True)
    error = run([python, HERE / "peer.py", "prepare", "--model", name, "--case", case, "--samples", args.samples],
                case / "prepare.log")
    if error:
        sys.exit(f"preparing {name} failed: {error}")
    description = json.loads((case / "case.json").read_text())

    rows = {}
    common = ["--model", name, "--case", case, "--runs", args.runs, "--warmup", args.warmup]
    for peer, _ in PEERS:
        (case / f"{peer}.json").unlink(missing_ok=True)
        error = run([python, HERE / "peer.py", peer, *common, "--threads", cores()], case / f"{peer}.log")
        rows[peer] = {"error": error} if error else json.loads((case / f"{peer}.json").read_text())

    (case / "smoothgrad.json").unlink(missing_ok=True)
    cmd = [args.binary, "bench", "--model", case / "model.onnx", "--input", case / "input.npy",
           "--noise", case / "noise.npy", "--sigma", repr(description["sigma"]), "--target", description["target"],
           "--runs", args.runs, "--warmup", args.warmup, "--json", case / "smoothgrad.json",
           "--npy", case / "smoothgrad-map.npy"]
    if args.memory_budget:
        cmd += ["--memory-budget", args.memory_budget]
    error = run(cmd, case / "smoothgrad.log")
    rows["smoothgrad"] = {"error": error} if error else json.loads((case / "smoothgrad.json").read_text())
    print((case / "smoothgrad.log").read_text(), end="", flush=True)

    flops = args.samples * (description["forward_flops"] + description["input_backward_flops"])
    sg = rows["smoothgrad"]
    if "flops_per_image" in sg and sg["flops_per_image"] != flops:
        print(f"  warning: smoothgrad counts {sg['flops_per_image']} FLOPs per image, the harness {flops}")
    reference = np.load(case / "smoothgrad-map.npy") if "error" not in sg else None
    for peer, row in rows.items():
        if "error" in row:
            continue
        row["median_s"] = median(row["times_s"])
        row["min_s"] = min(row["times_s"])
        row["gflops"] = flops / row["median_s"] / 1e9
        if reference is not None and peer != "smoothgrad":
            attribution = np.load(case / f"{peer}-map.npy").astype(np.float64)
            row["rel_l2"] = float(np.linalg.norm(attribution - reference) / np.linalg.norm(reference))
    fastest = min((rows[p]["median_s"] for p, _ in PEERS if "median_s" in rows[p]), default=None)
    for row in rows.values():
        if fastest and "median_s" in row:
            row["ratio"] = row["median_s"] / fastest
    return description, flops, rows


def milliseconds(seconds):
    return f"{seconds * 1e3:,.0f} ms" if seconds >= 1 else f"{seconds * 1e3:.2f} ms"


def table(results):
    lines = [
        "| model | implementation | median / image | min | GFLOP/s | RSS growth | × fastest peer | rel. L2 vs smoothgrad | notes |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, (description, _, rows) in results.items():
        for peer, label in [*PEERS, ("smoothgrad", "smoothgrad (CPU)")]:
            row = rows[peer]
            if "error" in row:
                lines.append(f"| {name} | {label} | failed | | | | | | {row['error'][:120]} |")
                continue
            growth = row.get("rss_growth_bytes")
            memory = f"{growth / 2**20:.0f} MiB" if growth is not None else "n/a"
            agreement = ""
            if "rel_l2" in row:
                agreement = f"{row['rel_l2']:.1e}" + (" **> 1e-3**" if row["rel_l2"] > AGREEMENT else "")
            notes = []
            if "compile_s" in row:
                notes.append(f"compile {row['compile_s']:.2f} s")
            if peer == "smoothgrad":
                lanes = int(row.get("lanes", 1))
                side = f" × {lanes} side by side" if lanes > 1 else ""
                notes.append(f"chunk {row['chunk']}{side}, {100 * row['fraction_of_sgemm']:.0f}% of sgemm")
            lines.append(
                f"| {name} | {label} | {milliseconds(row['median_s'])} | {milliseconds(row['min_s'])} "
                f"| {row['gflops']:.1f} | {memory} | {row['ratio']:.2f} | {agreement} | {', '.join(notes)} |"
            )
    return "\n".join(lines)


def model_table(results):
    lines = [
        "| model | input | GFLOP / copy (fwd + input bwd) | GFLOP / map (n) | MB moved / copy | weights MB | FLOP / byte |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, (d, flops, _) in results.items():
        per_copy = d["forward_flops"] + d["input_backward_flops"]
        moved = d["forward_bytes"] + d["backward_bytes"]
        per_map_bytes = d["samples"] * moved + 2 * d["weight_bytes"]
        lines.append(
            f"| {name} | {'×'.join(map(str, d['input_dims']))} | {per_copy / 1e9:.4f} | {flops / 1e9:.2f} ({d['samples']}) "
            f"| {moved / 1e6:.2f} | {d['weight_bytes'] / 1e6:.2f} | {flops / per_map_bytes:.1f} |"
        )
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--binary", required=True, type=pathlib.Path, help="target/release/smoothgrad")
    parser.add_argument("--models", default="tiny,small,medium", help="comma-separated: tiny, small, medium")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per implementation (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs first")
    parser.add_argument("--samples", type=int, default=50, help="noisy copies n")
    parser.add_argument("--memory-budget", type=int, help="smoothgrad's --memory-budget in MiB [its default]")
    parser.add_argument("--out-dir", type=pathlib.Path, default=HERE / "out", help="generated files")
    parser.add_argument("--results", type=pathlib.Path, help="the markdown report [bench/peers/results-<date>.md]")
    args = parser.parse_args()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in ("tiny", "small", "medium")]
    if unknown or not models:
        parser.error(f"unknown models {unknown}; choose from tiny, small, medium")
    if args.runs < 1:
        parser.error("--runs must be at least 1")

    results = {name: bench_model(name, args, args.out_dir) for name in models}

    date = datetime.date.today().isoformat()
    versions = {}
    for _, (_, _, rows) in results.items():
        for row in rows.values():
            versions.update(row.get("versions", {}))
    sgemm = [rows["smoothgrad"]["sgemm_gflops_per_s"] for _, _, rows in results.values()
             if "sgemm_gflops_per_s" in rows["smoothgrad"]]
    header = [
        f"# SmoothGrad on the CPU: smoothgrad and its peers, {date}",
        "",
        f"- Machine: {cpu_model()}, {cores()} cores ({platform.machine()}, {platform.system()} {platform.release()})",
        f"- n = {args.samples} noisy copies per map, σ = 0.15·(max − min), the same input and noise draws for all; "
        f"target = the top class; {args.runs} timed runs after {args.warmup} warm-up, median per image.",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items())) + f", numpy {np.__version__}, "
        f"Python {platform.python_version()}",
        f"- Measured sgemm (1024³ f32, smoothgrad's GEMM on {cores()} threads): "
        + (", ".join(f"{s:.1f}" for s in sgemm) + " GFLOP/s" if sgemm else "n/a"),
        "- GFLOP/s = (forward + input-gradient backward FLOPs) × n / median time; RSS growth = VmHWM after − "
        "VmRSS before the first call; × fastest peer = median / fastest median of Captum, PyTorch and JAX.",
        "",
    ]
    report = "\n".join(header) + "\n" + table(results) + "\n\n" + model_table(results) + "\n"
    print()
    print(report)
    path = args.results or HERE / f"results-{date}.md"
    path.write_text(report)
    print(f"wrote {path}")
    flagged = [(n, p) for n, (_, _, rows) in results.items() for p, r in rows.items() if r.get("rel_l2", 0) > AGREEMENT]
    failed = [(n, p) for n, (_, _, rows) in results.items() for p, r in rows.items() if "error" in r]
    if flagged:
        print(f"maps disagree with smoothgrad's by more than {AGREEMENT}: {flagged}")
    if failed:
        print(f"failed: {failed}")
    sys.exit(1 if failed or flagged else 0)


if __name__ == "__main__":
    main()
