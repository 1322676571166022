"""The three benchmark models in PyTorch, their seeded weights, and their FLOP and byte counts.

FLOPs follow smoothgrad's `Model::flops_per_sample`: convolutions and linear layers 2 per
multiply-add, and their input gradient costs the same as their forward; ReLU, pools, adds 1 per
output element each way; flatten 0; a batch norm right after a convolution 0 (it is folded into
the convolution's weights when the model is exported, as smoothgrad also does at load).
"""

import torch
import torch.nn as nn

# name -> (input [C, H, W], weight seed)
SHAPES = {
    "tiny": ((1, 28, 28), 2001),
    "small": ((3, 32, 32), 2002),
    "medium": ((3, 224, 224), 2003),
}


class Tiny(nn.Module):
    """conv3x3(1->8)+ReLU+maxpool2, conv3x3(8->16)+ReLU+maxpool2, linear 784->10."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(16 * 7 * 7, 10)

    def forward(self, x):
        return self.classifier(self.flatten(self.features(x)))


class Small(nn.Module):
    """VGG-style on 3x32x32: 3->32, 32->32, pool, 32->64, 64->64, pool, 64->128, pool, 2048->256->10."""

    def __init__(self):
        super().__init__()

        def conv(i, o):
            return [nn.Conv2d(i, o, 3, padding=1), nn.ReLU()]

        self.features = nn.Sequential(
            *conv(3, 32), *conv(32, 32), nn.MaxPool2d(2),
            *conv(32, 64), *conv(64, 64), nn.MaxPool2d(2),
            *conv(64, 128), nn.MaxPool2d(2),
        )
        self.flatten = nn.Flatten()
        self.classifier = nn.Sequential(nn.Linear(128 * 4 * 4, 256), nn.ReLU(), nn.Linear(256, 10))

    def forward(self, x):
        return self.classifier(self.flatten(self.features(x)))


class Add(nn.Module):
    """A residual sum as a module, so the FLOP counter sees it."""

    def forward(self, a, b):
        return a + b


class BasicBlock(nn.Module):
    def __init__(self, in_channels, out_channels, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )
        self.add = Add()
        self.relu2 = nn.ReLU()

    def forward(self, x):
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu2(self.add(out, identity))


class Medium(nn.Module):
    """ResNet-18 (torchvision's layout and parameter names) on 3x224x224, 1000 classes."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        widths = [(64, 64, 1), (64, 128, 2), (128, 256, 2), (256, 512, 2)]
        for i, (cin, cout, stride) in enumerate(widths, start=1):
            setattr(self, f"layer{i}", nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(512, 1000)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.flatten(self.avgpool(x)))


CONSTRUCTORS = {"tiny": Tiny, "small": Small, "medium": Medium}


def randomize(model):
    """He-normal weights keep activations near unit scale (PyTorch's default init shrinks them);
    batch norms get non-trivial affine parameters and running statistics."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                if module.bias is not None:
                    module.bias.uniform_(-0.1, 0.1)
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.3, 0.3)
                module.running_mean.uniform_(-0.3, 0.3)
                module.running_var.uniform_(0.5, 2.0)


def build(name):
    """The seeded model `name` in eval mode."""
    _, seed = SHAPES[name]
    torch.manual_seed(seed)
    model = CONSTRUCTORS[name]()
    randomize(model)
    return model.eval()


def load(name, state_path):
    """The model `name` with the weights saved by `prepare`."""
    model = CONSTRUCTORS[name]()
    model.load_state_dict(torch.load(state_path, weights_only=True))
    return model.eval()


def count(model, chw):
    """FLOPs (forward, input backward) of one sample, and the bytes one copy moves (forward,
    backward) if every layer reads its input and writes its output from memory, f32, plus the
    weight bytes (read once per pass of a whole chunk)."""
    flops = [0]
    moved = [0]
    weights = sum(p.numel() for p in model.parameters()) * 4
    previous = [None]

    def hook(module, inputs, output):
        out = output.numel()
        read = sum(i.numel() for i in inputs)
        if isinstance(module, nn.Conv2d):
            k = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            f = 2 * out * k
        elif isinstance(module, nn.Linear):
            f = 2 * out * module.in_features
        elif isinstance(module, nn.BatchNorm2d):
            # Folded into the convolution before it: no work of its own, no traffic.
            assert isinstance(previous[0], nn.Conv2d), "only batch norms after a convolution are folded"
            f, out, read = 0, 0, 0
        elif isinstance(module, (nn.Flatten, nn.Dropout)):
            f, out, read = 0, 0, 0
        else:
            f = out
        flops[0] += f
        moved[0] += 4 * (read + out)
        previous[0] = module

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.no_grad():
            model(torch.zeros((1, *chw)))
    finally:
        for h in handles:
            h.remove()
    # Backward reads dY and writes dX of every layer: the same traffic as forward.
    return {
        "forward_flops": flops[0],
        "input_backward_flops": flops[0],
        "forward_bytes": moved[0],
        "backward_bytes": moved[0],
        "weight_bytes": weights,
    }
