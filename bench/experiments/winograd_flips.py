"""How much does a Winograd forward move a SmoothGrad map? An experiment in PyTorch, f32.

Every 3×3 stride-1 pad-1 convolution of a benchmark model runs its FORWARD as Winograd
F(m×m, 3×3) in float32 (m = 2: points 0, ±1; m = 4: points 0, ±1, ±2, ±½ — the transforms
smoothgrad's `winograd.rs` uses) and its BACKWARD as PyTorch's exact convolution gradient, so
the only change against PyTorch is the forward rounding, and with it the ReLU and max-pool
decisions. Prints the map's relative L2 distance to PyTorch's plain map, and the fraction of
ReLU inputs whose sign differs, for each m.

    python bench/experiments/winograd_flips.py [--model small] [--case bench/peers/out/small]

Needs a case made by `bench/peers/run.sh` (state.pt, input.npy, noise.npy, case.json).
Written against torch 2.15.0 (CPU).
"""

import argparse
import json
import pathlib
import sys

import numpy as np
import torch
import torch.nn.functional as F

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "peers"))
import models  # noqa: E402

F23 = {
    "BT": [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
    "G": [[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]],
    "AT": [[1, 1, 1, 0], [0, 1, -1, -1]],
}
F43 = {
    "BT": [[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
           [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]],
    "G": [[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
          [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]],
    "AT": [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]],
}


def winograd_conv(x, w, b, mats):
    """conv2d(x, w, b, padding=1) for 3×3 kernels, through Winograd F(m×m, 3×3), in x's dtype."""
    bt, g, at = (torch.tensor(mats[k], dtype=x.dtype) for k in ("BT", "G", "AT"))
    m, a = at.shape[0], bt.shape[0]  # output tile, input tile (m + 2)
    n, c, h, wd = x.shape
    th, tw = -(-h // m), -(-wd // m)
    # Pad by 1 (the convolution's padding) and up to whole tiles.
    xp = F.pad(x, (1, tw * m + 2 - wd - 1, 1, th * m + 2 - h - 1))
    d = xp.unfold(2, a, m).unfold(3, a, m)  # [n, c, th, tw, a, a]
    v = torch.einsum("ij,nctwjk,lk->nctwil", bt, d, bt)
    u = torch.einsum("ij,kcjl,ml->kcim", g, w, g)  # [k, c, a, a]
    mm = torch.einsum("kcij,nctwij->nktwij", u, v)
    y = torch.einsum("ij,nktwjl,ml->nktwim", at, mm, at)  # [n, k, th, tw, m, m]
    y = y.permute(0, 1, 2, 4, 3, 5).reshape(n, w.shape[0], th * m, tw * m)[:, :, :h, :wd]
    return y if b is None else y + b[None, :, None, None]


class WinogradForward(torch.autograd.Function):
    """Winograd forward, exact (PyTorch) input gradient."""

    @staticmethod
    def forward(ctx, x, w, b, mats):
        ctx.save_for_backward(w)
        ctx.shape = x.shape
        return winograd_conv(x, w, b, mats)

    @staticmethod
    def backward(ctx, gy):
        (w,) = ctx.saved_tensors
        return torch.nn.grad.conv2d_input(ctx.shape, w, gy, padding=1), None, None, None


def patch(model, mats, relu_inputs):
    """Routes every 3×3 stride-1 pad-1 conv through `WinogradForward` (mats None: unchanged) and
    records every ReLU input."""
    for mod in model.modules():
        if isinstance(mod, torch.nn.Conv2d) and mod.kernel_size == (3, 3) and mod.stride == (1, 1) \
                and mod.padding == (1, 1) and mod.groups == 1 and mats is not None:
            mod.forward = (lambda m: lambda x: WinogradForward.apply(x, m.weight, m.bias, mats))(mod)
        if isinstance(mod, torch.nn.ReLU):
            mod.register_forward_hook(lambda _m, inp, _out: relu_inputs.append(inp[0].detach().clone()))


def smoothgrad(model, x, noise, sigma, target):
    batch = (x[None] + sigma * noise).requires_grad_(True)
    out = model(batch)[:, target].sum()
    (g,) = torch.autograd.grad(out, batch)
    return g.mean(0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="small")
    ap.add_argument("--case", default=None)
    args = ap.parse_args()
    case = pathlib.Path(args.case or HERE.parent / "peers" / "out" / args.model)
    d = json.loads((case / "case.json").read_text())
    x = torch.from_numpy(np.load(case / "input.npy"))
    noise = torch.from_numpy(np.load(case / "noise.npy"))
    torch.set_num_threads(2)

    results = {}
    for name, mats in (("pytorch", None), ("F(2x2,3x3)", F23), ("F(4x4,3x3)", F43)):
        model = models.load(args.model, case / "state.pt")
        for p in model.parameters():
            p.requires_grad_(False)
        relu_inputs = []
        patch(model, mats, relu_inputs)
        results[name] = (smoothgrad(model, x, noise, d["sigma"], d["target"]).double(), relu_inputs)

    ref, ref_relu = results["pytorch"]
    print(f"model {args.model}, n = {noise.shape[0]}, torch {torch.__version__}")
    print("| forward | map vs PyTorch (rel. L2) | ReLU inputs with another sign | of |")
    print("|---|---:|---:|---:|")
    for name in ("F(2x2,3x3)", "F(4x4,3x3)"):
        m, relu = results[name]
        rel = float((m - ref).norm() / ref.norm())
        flips = sum(int(((a > 0) != (b > 0)).sum()) for a, b in zip(relu, ref_relu))
        total = sum(a.numel() for a in ref_relu)
        print(f"| {name} | {rel:.2e} | {flips} | {total} |")


if __name__ == "__main__":
    main()
