"""ResNet: the standard, torchvision-like residual network with strided convs (REFERENCE.md section 3.3)."""
import torch.nn as nn

from models.common import ResNetBase, check_choice, net_size, stage_plan

NORMS = ("instance", "batch")


def _norm(c, norm_type):
    """BatchNorm, or per-channel GroupNorm for 'instance'."""
    return nn.BatchNorm2d(c) if norm_type == "batch" else nn.GroupNorm(c, c)


def _shortcut(cin, cout, stride, norm_type):
    """conv1x1(stride) then norm: the downsample.{0,1} checkpoint keys."""
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), _norm(cout, norm_type))


class IntroBlock(nn.Module):
    """Stem: conv7x7/2 + MaxPool (large), conv3x3 + MaxPool (mid) or conv3x3 alone (small)."""

    def __init__(self, size_kind, channels, planes, norm_type):
        super().__init__()
        if size_kind == "large":
            self.conv1 = nn.Conv2d(channels, planes, 7, stride=2, padding=3, bias=False)
        else:
            self.conv1 = nn.Conv2d(channels, planes, 3, padding=1, bias=False)
        self.bn1 = _norm(planes, norm_type)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.Identity() if size_kind == "small" else nn.MaxPool2d(3, stride=2, padding=1)

    def forward(self, x):
        """Stem output."""
        return self.pool(self.relu(self.bn1(self.conv1(x))))


class BasicBlock(nn.Module):
    """conv3x3(stride)-norm-ReLU-conv3x3-norm, plus shortcut, then ReLU."""
    expansion = 1

    def __init__(self, inplanes, planes, norm_type, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = _norm(planes, norm_type)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = _norm(planes, norm_type)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = (_shortcut(inplanes, planes, stride, norm_type)
                           if stride != 1 or inplanes != planes else None)

    def forward(self, x):
        """Residual block output."""
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
    """1x1-3x3(stride)-1x1 (x4 channels) bottleneck, plus shortcut, then ReLU."""
    expansion = 4

    def __init__(self, inplanes, planes, norm_type, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = _norm(planes, norm_type)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = _norm(planes, norm_type)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = _norm(planes * 4, norm_type)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = (_shortcut(inplanes, planes * 4, stride, norm_type)
                           if stride != 1 or inplanes != planes * 4 else None)

    def forward(self, x):
        """Residual block output."""
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet(ResNetBase):
    """ResNet-{10,18,34,50,101,152,200}, or the cifar layout; strided convs never shrink a map to 0."""

    def __init__(self, nclass, channels=3, size=224, depth=18, width=1.0, norm_type="batch",
                 cifar_layout=False):
        check_choice("resnet", "norm_type", norm_type, NORMS)
        # NOTE(reference): the official ResNet has no width (always 1.0); we scale the base channels.
        base, counts, bottleneck = stage_plan("resnet", depth, width, cifar_layout)
        intro = IntroBlock(net_size(size, cifar_layout), channels, base, norm_type)
        super().__init__(intro, Bottleneck if bottleneck else BasicBlock, base, counts, nclass, norm_type)
