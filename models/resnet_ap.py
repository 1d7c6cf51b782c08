"""ResNetAP: a ResNet whose strided convs are replaced by average pooling (REFERENCE.md section 3.2)."""
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import spectral_norm

from models.common import ResNetBase, check_choice, net_size, stage_plan
from utils import UserError

NORMS = ("instance", "batch", "none", "sn")


def _conv(cin, cout, k, norm_type):
    """A stride-1 'same' conv; biased only without a norm layer, spectral-normed for 'sn'."""
    conv = nn.Conv2d(cin, cout, k, padding=k // 2, bias=norm_type in ("sn", "none"))
    return spectral_norm(conv) if norm_type == "sn" else conv


def _norm(c, norm_type):
    """BatchNorm, per-channel GroupNorm ('instance'), or nothing for 'none'/'sn'."""
    if norm_type == "batch":
        return nn.BatchNorm2d(c)
    if norm_type == "instance":
        return nn.GroupNorm(c, c)
    return nn.Identity()


def _shortcut(cin, cout, stride, norm_type):
    """conv1x1, AvgPool(stride), norm; indices 0/1/2 fix the downsample.{0,2} checkpoint keys."""
    return nn.Sequential(_conv(cin, cout, 1, norm_type), nn.AvgPool2d(stride, stride), _norm(cout, norm_type))


class IntroBlock(nn.Module):
    """Stem: conv7x7 + AvgPool4 (large), conv3x3 + AvgPool2 (mid) or conv3x3 alone (small)."""

    def __init__(self, size_kind, channels, planes, norm_type):
        super().__init__()
        self.conv1 = _conv(channels, planes, 7 if size_kind == "large" else 3, norm_type)
        self.bn1 = _norm(planes, norm_type)
        self.relu = nn.ReLU(inplace=True)
        self.pool = {"large": nn.AvgPool2d(4, 4), "mid": nn.AvgPool2d(2, 2)}.get(size_kind, nn.Identity())

    def forward(self, x):
        """Stem output."""
        return self.pool(self.relu(self.bn1(self.conv1(x))))


class BasicBlock(nn.Module):
    """conv3x3-norm-ReLU-[avgpool]-conv3x3-norm, plus shortcut, then ReLU."""
    expansion = 1

    def __init__(self, inplanes, planes, norm_type, stride=1):
        super().__init__()
        self.conv1 = _conv(inplanes, planes, 3, norm_type)
        self.bn1 = _norm(planes, norm_type)
        self.conv2 = _conv(planes, planes, 3, norm_type)
        self.bn2 = _norm(planes, norm_type)
        self.relu = nn.ReLU(inplace=True)
        self.stride = stride
        self.downsample = (_shortcut(inplanes, planes, stride, norm_type)
                           if stride != 1 or inplanes != planes else None)

    def forward(self, x):
        """Residual block output."""
        out = self.relu(self.bn1(self.conv1(x)))
        if self.stride != 1:
            out = F.avg_pool2d(out, self.stride, self.stride)
        out = self.bn2(self.conv2(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
    """1x1-3x3-[avgpool]-1x1 (x4 channels) bottleneck, plus shortcut, then ReLU."""
    expansion = 4

    def __init__(self, inplanes, planes, norm_type, stride=1):
        super().__init__()
        # NOTE(reference): these three convs are never biased nor spectral-normed, even for 'none'/'sn'.
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = _norm(planes, norm_type)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = _norm(planes, norm_type)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = _norm(planes * 4, norm_type)
        self.relu = nn.ReLU(inplace=True)
        self.stride = stride
        self.downsample = (_shortcut(inplanes, planes * 4, stride, norm_type)
                           if stride != 1 or inplanes != planes * 4 else None)

    def forward(self, x):
        """Residual block output."""
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        if self.stride != 1:
            out = F.avg_pool2d(out, self.stride, self.stride)
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


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
        super().__init__(intro, Bottleneck if bottleneck else BasicBlock, base, counts, nclass, norm_type)
