"""ResNet: the standard, torchvision-like residual network with strided convs (the official models/resnet.py)."""
import torch.nn as nn

from models.common import (BasicBlock, Bottleneck, ResNetBase, check_choice, net_size, norm,
                           stage_plan)

NORMS = ("instance", "batch")


class IntroBlock(nn.Module):
    """Stem: conv7x7/2 + MaxPool (large), conv3x3 + MaxPool (mid) or conv3x3 alone (small)."""

    def __init__(self, size_kind, channels, planes, norm_type):
        super().__init__()
        if size_kind == "large":
            self.conv1 = nn.Conv2d(channels, planes, 7, stride=2, padding=3, bias=False)
        else:
            self.conv1 = nn.Conv2d(channels, planes, 3, padding=1, bias=False)
        self.bn1 = norm(planes, norm_type)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.Identity() if size_kind == "small" else nn.MaxPool2d(3, stride=2, padding=1)

    def forward(self, x):
        """Stem output."""
        return self.pool(self.relu(self.bn1(self.conv1(x))))


class ResNet(ResNetBase):
    """ResNet-{10,18,34,50,101,152,200}, or the cifar layout; strided convs never shrink a map to 0."""

    def __init__(self, nclass, channels=3, size=224, depth=18, width=1.0, norm_type="batch",
                 cifar_layout=False):
        check_choice("resnet", "norm_type", norm_type, NORMS)
        # NOTE(reference): the official ResNet has no width (always 1.0); we scale the base channels.
        base, counts, bottleneck = stage_plan("resnet", depth, width, cifar_layout)
        intro = IntroBlock(net_size(size, cifar_layout), channels, base, norm_type)
        super().__init__(intro, Bottleneck if bottleneck else BasicBlock, base, counts, nclass, norm_type)
