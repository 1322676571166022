"""PyTorch eager SmoothGrad on a CUDA GPU: the peer numbers for scripts/gpu-check.sh.

Three models, each explained with SmoothGrad over n noisy copies (default 50) as one batch:
noise added on the device, one forward, one batched `torch.autograd.grad` of the target logits
with respect to the noisy inputs, the mean over copies. Timed with CUDA events after warm-up,
cuDNN autotuning on, in fp32 (TF32 off), fp32 with TF32, and bf16 autocast.

  tiny    1x28x28    conv8-pool-conv16-pool-linear (the bundled digits model's shape)
  small   3x32x32    VGG-style: 5 convs (32, 32, 64, 64, 128) + 2 linears
  medium  3x224x224  ResNet-18 (written out here: no torchvision needed), eval-mode batch norm

Needs only torch; no network. Weights are random (seeded): timing does not depend on them.

`--export DIR` writes the three models (the same seeded weights) as DIR/<name>.safetensors +
DIR/<name>.arch.json ("smoothgrad-arch/1") for `smoothgrad bench`, and exits; it needs no GPU.
"""

import argparse
import json
import os
import struct
import sys
import time

import torch
from torch import nn


def tiny():
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * 7 * 7, 10),
    ), (1, 28, 28)


def small():
    def conv(i, o):
        return [nn.Conv2d(i, o, 3, padding=1), nn.ReLU()]
    return nn.Sequential(
        *conv(3, 32), *conv(32, 32), nn.MaxPool2d(2),
        *conv(32, 64), *conv(64, 64), nn.MaxPool2d(2),
        *conv(64, 128), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(128 * 4 * 4, 256), nn.ReLU(), nn.Linear(256, 10),
    ), (3, 32, 32)


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return torch.relu(y + (x if self.down is None else self.down(x)))


class ResNet18(nn.Module):
    def __init__(self, classes=1000):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
            nn.MaxPool2d(3, 2, 1),
        )
        layers, cin = [], 64
        for cout, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
            layers += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(512, classes)

    def forward(self, x):
        x = self.layers(self.stem(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def medium():
    return ResNet18(), (3, 224, 224)


MODELS = {"tiny": tiny, "small": small, "medium": medium}


def build(name):
    """Model `name` with its seeded random weights (the same in the timing and the export)."""
    torch.manual_seed(0)
    return MODELS[name]()


def write_safetensors(path, tensors):
    """A .safetensors file of f32 tensors (the format: u64 header size, JSON header, raw data)."""
    header, blobs, offset = {}, [], 0
    for key, value in tensors.items():
        data = value.detach().to("cpu", torch.float32).contiguous().numpy().tobytes()
        header[key] = {"dtype": "F32", "shape": list(value.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def arch_of(model):
    """The "smoothgrad-arch/1" layers of one of the models above."""
    layers = []

    def leaf(name, m):
        if isinstance(m, nn.Conv2d):
            return {"type": "conv2d", "name": name, "stride": list(m.stride), "padding": list(m.padding),
                    "dilation": list(m.dilation), "groups": m.groups}
        if isinstance(m, nn.BatchNorm2d):
            return {"type": "batch_norm2d", "name": name, "eps": m.eps}
        if isinstance(m, nn.ReLU):
            return {"type": "relu"}
        if isinstance(m, nn.MaxPool2d):
            return {"type": "max_pool2d", "kernel": m.kernel_size, "stride": m.stride, "padding": m.padding}
        if isinstance(m, nn.Flatten):
            return {"type": "flatten"}
        if isinstance(m, nn.Linear):
            return {"type": "linear", "name": name}
        raise ValueError(f"no arch type for {name}: {m}")

    def sequential(prefix, seq):
        for i, m in enumerate(seq):
            layers.append(leaf(f"{prefix}{i}", m))

    if isinstance(model, nn.Sequential):
        sequential("", model)
        return layers
    sequential("stem.", model.stem)
    last = None
    for b, block in enumerate(model.layers):
        p = f"layers.{b}"
        entry = {"inputs": [last or "stem.out"]}
        layers.append({"type": "conv2d", "name": f"{p}.conv1", "id": f"{p}.conv1", **entry,
                       "stride": list(block.conv1.stride), "padding": list(block.conv1.padding)})
        layers.append({"type": "batch_norm2d", "name": f"{p}.bn1"})
        layers.append({"type": "relu"})
        layers.append({"type": "conv2d", "name": f"{p}.conv2", "padding": [1, 1]})
        layers.append({"type": "batch_norm2d", "name": f"{p}.bn2", "id": f"{p}.main"})
        shortcut = last
        if block.down is not None:
            layers.append({"type": "conv2d", "name": f"{p}.down.0", "stride": list(block.down[0].stride),
                           "inputs": [last or "stem.out"]})
            layers.append({"type": "batch_norm2d", "name": f"{p}.down.1", "id": f"{p}.short"})
            shortcut = f"{p}.short"
        layers.append({"type": "add", "inputs": [f"{p}.main", shortcut or "stem.out"]})
        layers.append({"type": "relu", "id": f"{p}.out"})
        last = f"{p}.out"
    # the stem's last layer is what the first block and its shortcut read
    stem_end = len(model.stem) - 1
    layers[stem_end]["id"] = "stem.out"
    layers.append({"type": "global_avg_pool2d"})
    layers.append({"type": "flatten"})
    layers.append({"type": "linear", "name": "fc"})
    return layers


def export(directory):
    os.makedirs(directory, exist_ok=True)
    for name in MODELS:
        model, shape = build(name)
        model.eval()
        write_safetensors(os.path.join(directory, f"{name}.safetensors"), model.state_dict())
        arch = {"format": "smoothgrad-arch/1", "input": list(shape), "layers": arch_of(model)}
        with open(os.path.join(directory, f"{name}.arch.json"), "w") as f:
            json.dump(arch, f, indent=1)
        print(f"{directory}/{name}.safetensors + .arch.json")


def smoothgrad(model, x, target, samples, sigma, autocast):
    noisy = (x + sigma * torch.randn((samples,) + x.shape[1:], device=x.device)).requires_grad_(True)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
        logits = model(noisy)
    (grad,) = torch.autograd.grad(logits[:, target].sum(), noisy)
    return grad.float().mean(0)


def time_ms(fn, warmup, runs):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(runs):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    times.sort()
    return times[len(times) // 2], times[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=50)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--models", default="tiny,small,medium")
    ap.add_argument("--json")
    ap.add_argument("--export", metavar="DIR", help="write the models for smoothgrad bench, then exit")
    args = ap.parse_args()
    if args.export:
        export(args.export)
        return 0
    if not torch.cuda.is_available():
        print("no CUDA device visible to PyTorch", file=sys.stderr)
        return 1
    torch.manual_seed(0)
    torch.backends.cudnn.benchmark = True
    device = torch.device("cuda")
    print(f"torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}, {torch.cuda.get_device_name()}")
    rows = []
    for name in args.models.split(","):
        model, shape = build(name)
        model = model.to(device).eval()
        for p in model.parameters():
            p.requires_grad_(False)  # as the explainer: input gradients only
        x = torch.rand((1,) + shape, device=device)
        sigma = 0.15 * float(x.max() - x.min())
        target = int(model(x).argmax())
        for mode in ["fp32", "tf32", "bf16"]:
            torch.backends.cuda.matmul.allow_tf32 = mode == "tf32"
            torch.backends.cudnn.allow_tf32 = mode == "tf32"
            start = time.perf_counter()
            median, best = time_ms(
                lambda: smoothgrad(model, x, target, args.samples, sigma, mode == "bf16"),
                args.warmup, args.runs,
            )
            rows.append({
                "model": name, "input": list(shape), "mode": mode, "samples": args.samples,
                "median_ms": round(median, 3), "min_ms": round(best, 3),
                "copies_per_s": round(args.samples / (median / 1e3), 1),
                "wall_s": round(time.perf_counter() - start, 2),
            })
            r = rows[-1]
            print(f"  {name:6} {mode:4}  median {r['median_ms']:9.3f} ms  min {r['min_ms']:9.3f} ms", flush=True)
    print()
    print(f"| model | input | mode | n | median ms | min ms | copies/s |")
    print(f"|---|---|---|---:|---:|---:|---:|")
    for r in rows:
        dims = "x".join(map(str, r["input"]))
        print(f"| {r['model']} | {dims} | {r['mode']} | {r['samples']} | {r['median_ms']} | {r['min_ms']} | {r['copies_per_s']} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
