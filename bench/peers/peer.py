"""One step of the peer comparison, run by `harness.py` in its own process so that no two
frameworks share threads or memory:

    python peer.py prepare --model small --case DIR --samples 50
    python peer.py captum|torch|jax --model small --case DIR --runs 5 --warmup 1 --threads 2

`prepare` writes the case: model.onnx (batch norms folded by the exporter), state.pt (the
PyTorch state_dict), weights.npz (the same, for JAX), input.npy [C,H,W], noise.npy [n,C,H,W]
standard normal, and case.json (σ = 0.15·(max − min), target = top class, FLOPs, bytes).
A peer writes <peer>.json (times, memory, versions) and <peer>-map.npy (its last map).
"""

import argparse
import json
import pathlib
import sys
import time
import warnings

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def proc_status_bytes(field):
    """A kB field of /proc/self/status in bytes, or None off Linux."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def reset_peak_rss():
    """Restarts VmHWM from the current RSS (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def timed_runs(call, runs, warmup):
    """Runs `call` warmup + runs times; returns (seconds of the timed runs, last result, memory)."""
    before = proc_status_bytes("VmRSS")
    reset = reset_peak_rss()
    for _ in range(warmup):
        call()
    times = []
    result = None
    for _ in range(runs):
        start = time.perf_counter()
        result = call()
        times.append(time.perf_counter() - start)
    peak = proc_status_bytes("VmHWM")
    memory = {"rss_before_bytes": before, "rss_peak_bytes": peak,
              "rss_growth_bytes": peak - before if (reset and before is not None and peak is not None) else None}
    return times, result, memory


def prepare(args):
    import torch
    import models

    case = pathlib.Path(args.case)
    case.mkdir(parents=True, exist_ok=True)
    chw, seed = models.SHAPES[args.model]
    model = models.build(args.model)
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, case / "state.pt")
    np.savez(case / "weights.npz", **{k: v.numpy().astype(np.float32) for k, v in state.items()})

    rng = np.random.default_rng(seed + 1)
    x = rng.random(chw, dtype=np.float32)
    noise = rng.standard_normal((args.samples, *chw), dtype=np.float32)
    np.save(case / "input.npy", x)
    np.save(case / "noise.npy", noise)
    sigma = 0.15 * (float(x.max()) - float(x.min()))
    with torch.no_grad():
        logits = model(torch.from_numpy(x)[None])[0]
    target = int(logits.argmax())

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # The TorchScript exporter in eval mode folds each batch norm into its convolution.
        torch.onnx.export(
            model, (torch.from_numpy(np.stack([x, x])),), str(case / "model.onnx"), dynamo=False,
            training=torch.onnx.TrainingMode.EVAL, opset_version=17, input_names=["input"],
            output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )
    description = {"model": args.model, "input_dims": list(chw), "samples": args.samples, "sigma": sigma,
                   "target": target, **models.count(model, chw)}
    (case / "case.json").write_text(json.dumps(description, indent=2) + "\n")


def load_case(args):
    case = pathlib.Path(args.case)
    description = json.loads((case / "case.json").read_text())
    x = np.load(case / "input.npy")
    noise = np.load(case / "noise.npy")
    return case, description, x, noise


def run_torch_peer(args, kind):
    import torch
    import models

    torch.set_num_threads(args.threads)
    case, d, x_np, noise_np = load_case(args)
    model = models.load(args.model, case / "state.pt")
    x = torch.from_numpy(x_np)
    noise = torch.from_numpy(noise_np)
    sigma, target, n = d["sigma"], d["target"], noise.shape[0]
    versions = {"torch": torch.__version__}

    if kind == "captum":
        import captum
        import captum.attr._core.noise_tunnel as noise_tunnel
        from captum.attr import NoiseTunnel, Saliency

        versions["captum"] = captum.__version__

        class TorchWithGivenNoise:
            """`torch` as noise_tunnel sees it, except that `normal(0, std)` returns std · noise:
            copy i of the image gets row i of the shared draws."""

            def __getattr__(self, name):
                return getattr(torch, name)

            @staticmethod
            def normal(mean, std):
                assert mean == 0 and tuple(std.shape) == tuple(noise.shape), (mean, std.shape)
                return std * noise

        noise_tunnel.torch = TorchWithGivenNoise()
        explainer = NoiseTunnel(Saliency(model))
        batch = x[None]

        def call():
            return explainer.attribute(batch, nt_type="smoothgrad", nt_samples=n, nt_samples_batch_size=n,
                                       stdevs=float(sigma), target=target, abs=False)[0]
    else:
        for p in model.parameters():
            p.requires_grad_(False)

        def call():
            noisy = (x[None] + sigma * noise).requires_grad_(True)
            out = model(noisy)
            (grad,) = torch.autograd.grad(out[:, target].sum(), noisy)
            return grad.mean(0)

    times, result, memory = timed_runs(call, args.runs, args.warmup)
    np.save(case / f"{kind}-map.npy", result.detach().numpy().astype(np.float32))
    return {"times_s": times, "versions": versions, **memory}


def run_jax_peer(args):
    import jax
    import jax.numpy as jnp
    import jax_models

    case, d, x_np, noise_np = load_case(args)
    forward = jax_models.MODELS[args.model]
    params = {k: jnp.asarray(v) for k, v in np.load(case / "weights.npz").items()}
    sigma, target = d["sigma"], d["target"]

    def score(p, xi):
        return forward(p, xi[None])[0, target]

    per_copy_grad = jax.vmap(jax.grad(score, argnums=1), in_axes=(None, 0))

    def smoothgrad(p, x, noise):
        return jnp.mean(per_copy_grad(p, x[None] + sigma * noise), axis=0)

    x, noise = jnp.asarray(x_np), jnp.asarray(noise_np)
    start = time.perf_counter()
    compiled = jax.jit(smoothgrad).lower(params, x, noise).compile()
    compile_s = time.perf_counter() - start

    def call():
        return compiled(params, x, noise).block_until_ready()

    times, result, memory = timed_runs(call, args.runs, args.warmup)
    np.save(case / "jax-map.npy", np.asarray(result, dtype=np.float32))
    return {"times_s": times, "compile_s": compile_s, "versions": {"jax": jax.__version__}, **memory}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=["prepare", "captum", "torch", "jax"])
    parser.add_argument("--model", required=True)
    parser.add_argument("--case", required=True)
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.step == "prepare":
        prepare(args)
        return
    result = run_jax_peer(args) if args.step == "jax" else run_torch_peer(args, args.step)
    result["threads"] = args.threads
    (pathlib.Path(args.case) / f"{args.step}.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
