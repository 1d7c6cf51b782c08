"""The residual-network skeleton shared by ResNet and ResNetAP (REFERENCE.md sections 3.2-3.3)."""
import torch.nn as nn
import torch.nn.functional as F

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


class ResNetBase(nn.Module):
    """layer0 (intro), layer1..4 (channels c, 2c, 4c, 8c; strides 1, 2, 2, 2), global average pool, fc."""

    def __init__(self, intro, block, base, counts, nclass, norm_type):
        super().__init__()
        self.layer0 = intro
        inplanes = base
        for i, n in enumerate(counts):
            planes, stride = base * 2**i, 1 if i == 0 else 2
            blocks = []
            for j in range(n):
                blocks.append(block(inplanes, planes, norm_type, stride if j == 0 else 1))
                inplanes = planes * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.feature_dim = inplanes
        self.fc = nn.Linear(inplanes, nclass)
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
