"""DenseNet-CIFAR: growth 12, blocks (6, 12, 24, 16), reduction 0.5 (the official models/densenet_cifar.py).

After kuangliu/pytorch-cifar (models/densenet.py), as in the official code's models/densenet_cifar.py.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from utils import UserError


class Bottleneck(nn.Module):
    """BN-ReLU-conv1x1(4g)-BN-ReLU-conv3x3(g), concatenated in front of the input."""

    def __init__(self, in_planes, growth):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, 4 * growth, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(4 * growth)
        self.conv2 = nn.Conv2d(4 * growth, growth, 3, padding=1, bias=False)

    def forward(self, x):
        """Input with growth new channels prepended."""
        out = self.conv2(F.relu(self.bn2(self.conv1(F.relu(self.bn1(x))))))
        return torch.cat([out, x], 1)


class Transition(nn.Module):
    """BN-ReLU-conv1x1 (channel reduction) then AvgPool2."""

    def __init__(self, in_planes, out_planes):
        super().__init__()
        self.bn = nn.BatchNorm2d(in_planes)
        self.conv = nn.Conv2d(in_planes, out_planes, 1, bias=False)

    def forward(self, x):
        """Halved feature map."""
        return F.avg_pool2d(self.conv(F.relu(self.bn(x))), 2)


class DenseNet(nn.Module):
    """DenseNet-CIFAR; depth, width and norm do not apply (fixed architecture, BatchNorm)."""

    def __init__(self, nclass, channels=3, size=32, growth=12, blocks=(6, 12, 24, 16), reduction=0.5):
        super().__init__()
        if size < 8:
            raise UserError(f"densenet: three transitions pool a {size}x{size} input to nothing; "
                            "use images of >= 8 pixels")
        planes = 2 * growth
        self.conv1 = nn.Conv2d(channels, planes, 3, padding=1, bias=False)
        for i, n in enumerate(blocks):
            self.add_module(f"dense{i + 1}", nn.Sequential(*[Bottleneck(planes + j * growth, growth)
                                                            for j in range(n)]))
            planes += n * growth
            if i < len(blocks) - 1:
                out_planes = int(planes * reduction)  # floor, as math.floor in the reference
                self.add_module(f"trans{i + 1}", Transition(planes, out_planes))
                planes = out_planes
        self.bn = nn.BatchNorm2d(planes)
        self.feature_dim = planes
        self.linear = nn.Linear(planes, nclass)

    def forward(self, x, return_features=False):
        """Logits (B, nclass), or (logits, globally pooled features (B, 384))."""
        out = self.conv1(x)
        for i in range(1, 4):
            out = getattr(self, f"trans{i}")(getattr(self, f"dense{i}")(out))
        out = F.relu(self.bn(self.dense4(out)))
        # NOTE(reference): the official head is avg_pool2d(4), i.e. global only at 32x32; adaptive
        # pooling gives the same result there and keeps the 384-d head valid at any size.
        feat = F.adaptive_avg_pool2d(out, 1).flatten(1)
        logits = self.linear(feat)
        return (logits, feat) if return_features else logits
