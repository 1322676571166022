"""Trains the bundled demo model and writes every file in assets/.

A small CNN classifies scikit-learn's 8x8 handwritten digits (`load_digits`), upsampled to
32x32 with bilinear interpolation, values in [0, 1]. Written for and run with PyTorch 2.15.0
(CPU is enough: about 40 s on 2 cores), scikit-learn 1.9.1, onnx 1.23.2, safetensors 0.8.0 and
Pillow 13.0.0:

    pip install torch scikit-learn onnx safetensors pillow
    python assets/make_demo_model.py

Training adds random shifts and Gaussian noise (std 0.2) to the inputs: training with noise
gives much cleaner input gradients (SmoothGrad paper, section 4.2). Max pooling is kept so the
raw gradient shows the speckle SmoothGrad removes; `--pool avg` gives smooth gradients already.
`--out-dir`, `--train-noise`, `--epochs` and `--pool` make variants without touching assets/.

Outputs (all small, commit-ready):
    assets/digits-cnn.onnx          opset 17, input "input" [batch, 1, 32, 32], output "logits"
    assets/digits-cnn.safetensors   the state_dict (PyTorch names, float32)
    assets/digits-cnn.arch.json     the layers, format "smoothgrad-arch/1" (crates/layers/src/arch.rs)
    assets/images/digit-<label>.png six test digits, 32x32 8-bit grayscale
"""

import argparse
import json
import pathlib

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

ASSETS = pathlib.Path(__file__).resolve().parent
SEED = 0
SIZE = 32
EPOCHS = 30
# Std of the Gaussian noise added to training inputs (in [0, 1] pixel units).
TRAIN_NOISE = 0.2
# Pooling after each convolution.
POOL = "max"
# Test digits bundled as demo images (one per label).
IMAGE_LABELS = [0, 2, 3, 5, 7, 8]


def digits_32():
    """load_digits as float32 [N, 1, 32, 32] in [0, 1] (bilinear x4) and int64 labels."""
    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32) / 16.0).unsqueeze(1)
    x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    return x.clamp(0.0, 1.0), torch.from_numpy(d.target.astype(np.int64))


def make_model(pool):
    # Names are the safetensors prefixes the arch JSON below refers to.
    pool_layer = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}[pool]
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),  # 0
        nn.ReLU(),
        pool_layer(2),  # 32 -> 16
        nn.Conv2d(16, 32, 3, padding=1),  # 3
        nn.ReLU(),
        pool_layer(2),  # 16 -> 8
        nn.Conv2d(32, 32, 3, padding=1),  # 6
        nn.ReLU(),
        pool_layer(2),  # 8 -> 4
        nn.Flatten(1),
        nn.Linear(32 * 4 * 4, 10),  # 10
    )


def arch(pool):
    """The same layers in the "smoothgrad-arch/1" JSON format."""
    pool_layer = {"type": f"{pool}_pool2d", "kernel": 2}
    layers = []
    for name in ["0", "3", "6"]:
        layers += [{"type": "conv2d", "name": name, "padding": 1}, {"type": "relu"}, pool_layer]
    layers += [{"type": "flatten", "start_dim": 1}, {"type": "linear", "name": "10"}]
    return {"format": "smoothgrad-arch/1", "input": [1, SIZE, SIZE], "layers": layers}


def augment(x, generator, noise):
    """Random translation by up to 2 pixels (zero fill), then Gaussian noise of std `noise`.

    Training with noise makes the input gradients far less noisy (SmoothGrad paper, sec. 4.2).
    """
    x = shift(x, generator)
    return x + noise * torch.randn(x.shape, generator=generator)


def shift(x, generator):
    """Random translation by up to 2 pixels (zero fill)."""
    dy, dx = torch.randint(-2, 3, (2,), generator=generator).tolist()
    x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
    if dy > 0:
        x[:, :, :dy] = 0
    elif dy < 0:
        x[:, :, dy:] = 0
    if dx > 0:
        x[:, :, :, :dx] = 0
    elif dx < 0:
        x[:, :, :, dx:] = 0
    return x


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=pathlib.Path, default=ASSETS)
    parser.add_argument("--train-noise", type=float, default=TRAIN_NOISE)
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--pool", choices=["max", "avg"], default=POOL)
    args = parser.parse_args()
    out = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(SEED)
    x, y = digits_32()
    idx_train, idx_test = train_test_split(
        np.arange(len(y)), test_size=0.25, random_state=SEED, stratify=y.numpy()
    )
    x_train, y_train = x[idx_train], y[idx_train]
    x_test, y_test = x[idx_test], y[idx_test]

    model = make_model(args.pool)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(SEED)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.epochs)
    for _ in range(args.epochs):
        model.train()
        perm = torch.randperm(len(y_train), generator=generator)
        for start in range(0, len(perm), 64):
            b = perm[start : start + 64]
            loss = F.cross_entropy(model(augment(x_train[b].clone(), generator, args.train_noise)), y_train[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()

    model.eval()
    with torch.no_grad():
        probs = model(x_test).softmax(1)
    pred = probs.argmax(1)
    accuracy = (pred == y_test).float().mean().item()
    print(f"test accuracy: {accuracy:.4f} ({int((pred == y_test).sum())}/{len(y_test)})")

    save_file(
        {k: v.detach().contiguous() for k, v in model.state_dict().items()},
        str(out / "digits-cnn.safetensors"),
    )
    (out / "digits-cnn.arch.json").write_text(json.dumps(arch(args.pool), indent=2) + "\n")
    torch.onnx.export(
        model,
        (x_test[:1],),
        str(out / "digits-cnn.onnx"),
        input_names=["input"],
        output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )

    # The most confidently classified test digit of each label, as the 8-bit picture the CLI
    # will read.
    images = out / "images"
    images.mkdir(exist_ok=True)
    for label in IMAGE_LABELS:
        confidence = torch.where(y_test == label, probs[:, label], -1.0)
        i = int(confidence.argmax())
        pixels = (x_test[i, 0].numpy() * 255.0).round().clip(0, 255).astype(np.uint8)
        Image.fromarray(pixels, mode="L").save(images / f"digit-{label}.png", optimize=True)
    print("wrote", ", ".join(sorted(p.name for p in out.rglob("*") if p.is_file())))


if __name__ == "__main__":
    main()
