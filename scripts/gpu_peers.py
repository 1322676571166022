"""PyTorch eager SmoothGrad on a CUDA GPU: the peer numbers for scripts/gpu-check.sh.

Three models, each explained with SmoothGrad over n noisy copies (default 50) as one batch:
noise added on the device, one forward, one batched `torch.autograd.grad` of the target logits
with respect to the noisy inputs, the mean over copies. Timed with CUDA events after warm-up,
cuDNN autotuning on, in fp32 (TF32 off), fp32 with TF32, and bf16 autocast.

  tiny    1x28x28    conv8-pool-conv16-pool-linear (the bundled digits model's shape)
  small   3x32x32    VGG-style: 5 convs (32, 32, 64, 64, 128) + 2 linears
  medium  3x224x224  ResNet-18 (written out here: no torchvision needed), eval-mode batch norm

Needs only torch; no network. Weights are random (seeded): timing does not depend on them.
"""

import argparse
import json
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
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device visible to PyTorch", file=sys.stderr)
        return 1
    torch.manual_seed(0)
    torch.backends.cudnn.benchmark = True
    device = torch.device("cuda")
    print(f"torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}, {torch.cuda.get_device_name()}")
    rows = []
    for name in args.models.split(","):
        model, shape = MODELS[name]()
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
