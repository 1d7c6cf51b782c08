"""The residual-network skeleton and blocks shared by ResNet and ResNetAP (the official models/resnet_ap.py
and models/resnet.py).

The two differ only in how a block downsamples: `avgpool=False` (ResNet) strides its convs, `avgpool=True`
(ResNetAP) keeps them at stride 1 and average-pools instead. ResNet's norms ('batch', 'instance') never
reach the biased / spectral-normed / Identity cases of `conv` and `norm`.
"""
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import spectral_norm

from utils import UserError

# Blocks per stage by depth in the ImageNet layout; depth >= 50 uses Bottleneck blocks.
STAGE_BLOCKS = {10: (1, 1, 1, 1), 18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3),
                101: (3, 4, 23, 3), 152: (3, 8, 36, 3), 200: (3, 24, 36, 3)}


def net_size(size, cifar_layout):
    """Which intro block to use: 'small' (no downsampling), 'mid' or 'large', from the image size."""
    if cifar_layout or size <= 64:
        return "small"
    return "mid" if size <= 128 else "large"


def stage_plan(name, depth, width, cifar_layout):
    """(base channels, blocks per stage, uses bottleneck) for a depth in the given layout."""
    if int(32 * width) < 1:
        raise UserError(f"{name}: width {width} leaves no channels; use width >= 1/32")
    if cifar_layout:
        if depth < 8:
            raise UserError(f"{name}: the cifar layout needs depth >= 8 (6n+2 is usual), got {depth}")
        # NOTE(reference): the official cifar layout ignores width (base 32); we scale it, same at 1.0.
        return int(32 * width), ((depth - 2) // 6,) * 4, False
    if depth not in STAGE_BLOCKS:
        raise UserError(f"{name}: unsupported depth {depth}; valid: {', '.join(map(str, STAGE_BLOCKS))}")
    return int(64 * width), STAGE_BLOCKS[depth], depth >= 50


def check_choice(name, what, value, valid):
    """Raise a UserError naming the valid values when value is not one of them."""
    if value not in valid:
        raise UserError(f"{name}: unsupported {what} {value!r}; valid: {', '.join(map(str, valid))}")


def conv(cin, cout, k, norm_type, stride=1):
    """A 'same' conv; biased only without a norm layer, spectral-normed for 'sn'."""
    layer = nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=norm_type in ("sn", "none"))
    return spectral_norm(layer) if norm_type == "sn" else layer


def norm(c, norm_type):
    """BatchNorm, per-channel GroupNorm ('instance'), or nothing for 'none'/'sn'."""
    if norm_type == "batch":
        return nn.BatchNorm2d(c)
    if norm_type == "instance":
        return nn.GroupNorm(c, c)
    return nn.Identity()


def shortcut(cin, cout, stride, norm_type, avgpool):
    """conv1x1(stride)-norm, or conv1x1-AvgPool(stride)-norm: the downsample.{0,1} or .{0,2} keys."""
    if not avgpool:
        return nn.Sequential(conv(cin, cout, 1, norm_type, stride), norm(cout, norm_type))
    return nn.Sequential(conv(cin, cout, 1, norm_type), nn.AvgPool2d(stride, stride), norm(cout, norm_type))


class BasicBlock(nn.Module):
    """conv3x3(stride)-norm-ReLU-[avgpool]-conv3x3-norm, plus shortcut, then ReLU."""
    expansion = 1

    def __init__(self, inplanes, planes, norm_type, stride=1, avgpool=False):
        super().__init__()
        self.conv1 = conv(inplanes, planes, 3, norm_type, 1 if avgpool else stride)
        self.bn1 = norm(planes, norm_type)
        self.conv2 = conv(planes, planes, 3, norm_type)
        self.bn2 = norm(planes, norm_type)
        self.relu = nn.ReLU(inplace=True)
        self.pool_stride = stride if avgpool else 1
        self.downsample = (shortcut(inplanes, planes, stride, norm_type, avgpool)
                           if stride != 1 or inplanes != planes else None)

    def forward(self, x):
        """Residual block output."""
        out = self.relu(self.bn1(self.conv1(x)))
        if self.pool_stride != 1:
            out = F.avg_pool2d(out, self.pool_stride, self.pool_stride)
        out = self.bn2(self.conv2(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
    """1x1-3x3(stride)-[avgpool]-1x1 (x4 channels) bottleneck, plus shortcut, then ReLU."""
    expansion = 4

    def __init__(self, inplanes, planes, norm_type, stride=1, avgpool=False):
        super().__init__()
        # NOTE(reference): ResNetAP's bottleneck convs stay plain: unbiased for 'none'/'sn', no spectral norm.
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = norm(planes, norm_type)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1 if avgpool else stride, padding=1, bias=False)
        self.bn2 = norm(planes, norm_type)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = norm(planes * 4, norm_type)
        self.relu = nn.ReLU(inplace=True)
        self.pool_stride = stride if avgpool else 1
        self.downsample = (shortcut(inplanes, planes * 4, stride, norm_type, avgpool)
                           if stride != 1 or inplanes != planes * 4 else None)

    def forward(self, x):
        """Residual block output."""
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        if self.pool_stride != 1:
            out = F.avg_pool2d(out, self.pool_stride, self.pool_stride)
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNetBase(nn.Module):
    """layer0 (intro), layer1..4 (channels c, 2c, 4c, 8c; strides 1, 2, 2, 2), global average pool, fc."""

    def __init__(self, intro, block, base, counts, nclass, norm_type, avgpool=False):
        super().__init__()
        self.layer0 = intro
        inplanes = base
        for i, n in enumerate(counts):
            planes, stride = base * 2**i, 1 if i == 0 else 2
            blocks = []
            for j in range(n):
                blocks.append(block(inplanes, planes, norm_type, stride if j == 0 else 1, avgpool))
                inplanes = planes * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.feature_dim = inplanes
        self.fc = nn.Linear(inplanes, nclass)
        self._init_weights()

    def reset_parameters(self):
        """Fresh initial weights in place, drawn in construction order (the draws a new model takes)."""
        for m in self.modules():
            if m is not self and hasattr(m, "reset_parameters"):
                m.reset_parameters()
        self._init_weights()

    def _init_weights(self):
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                # N(0, sqrt(2 / (k*k*out))); a spectral-normed conv keeps its parameter in weight_orig.
                nn.init.kaiming_normal_(getattr(m, "weight_orig", m.weight), mode="fan_out",
                                        nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x, return_features=False):
        """Logits (B, nclass), or (logits, globally pooled last-stage features (B, feature_dim))."""
        for i in range(5):
            x = getattr(self, f"layer{i}")(x)
        feat = F.adaptive_avg_pool2d(x, 1).flatten(1)
        logits = self.fc(feat)
        return (logits, feat) if return_features else logits
