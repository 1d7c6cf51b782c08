"""ResNetAP: a ResNet whose strided convs are replaced by average pooling (the official models/resnet_ap.py)."""
import torch.nn as nn

from models.common import (BasicBlock, Bottleneck, ResNetBase, check_choice, conv, net_size, norm,
                           stage_plan)
from utils import UserError

NORMS = ("instance", "batch", "none", "sn")


class IntroBlock(nn.Module):
    """Stem: conv7x7 + AvgPool4 (large), conv3x3 + AvgPool2 (mid) or conv3x3 alone (small)."""

    def __init__(self, size_kind, channels, planes, norm_type):
        super().__init__()
        self.conv1 = conv(channels, planes, 7 if size_kind == "large" else 3, norm_type)
        self.bn1 = norm(planes, norm_type)
        self.relu = nn.ReLU(inplace=True)
        self.pool = {"large": nn.AvgPool2d(4, 4), "mid": nn.AvgPool2d(2, 2)}.get(size_kind, nn.Identity())

    def forward(self, x):
        """Stem output."""
        return self.pool(self.relu(self.bn1(self.conv1(x))))


class ResNetAP(ResNetBase):
    """ResNetAP-{10,18,34,50,101,152,200}, or the cifar layout (32/64/128/256, (depth-2)//6 blocks)."""

    def __init__(self, nclass, channels=3, size=224, depth=10, width=1.0, norm_type="instance",
                 cifar_layout=False):
        check_choice("resnet_ap", "norm_type", norm_type, NORMS)
        base, counts, bottleneck = stage_plan("resnet_ap", depth, width, cifar_layout)
        # Three floor-division average pools follow the stem; mid/large stems only see sizes > 64.
        if size < 8:
            raise UserError(f"resnet_ap: a {size}x{size} input pools to nothing; use images of >= 8 pixels")
        intro = IntroBlock(net_size(size, cifar_layout), channels, base, norm_type)
        super().__init__(intro, Bottleneck if bottleneck else BasicBlock, base, counts, nclass, norm_type,
                         avgpool=True)
