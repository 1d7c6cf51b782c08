"""ConvNet: depth x [conv3x3 - norm - ReLU - AvgPool2], then one Linear (the official models/convnet.py)."""
import torch.nn as nn

from models.common import check_choice
from utils import UserError

NORMS = ("instance", "batch", "layer", "group", "none")


def _norm(norm_type, c, h, w):
    """The normalisation layer after a conv with c output channels and an h x w output."""
    if norm_type == "instance":
        return nn.GroupNorm(c, c, affine=True)  # one group per channel = instance norm with affine
    if norm_type == "batch":
        return nn.BatchNorm2d(c)
    if norm_type == "layer":
        return nn.LayerNorm([c, h, w])
    if norm_type == "group":
        return nn.GroupNorm(4, c, affine=True)
    return None


class ConvNet(nn.Module):
    """The ConvNet of the dataset-condensation literature; width multiplies 128 channels."""

    def __init__(self, nclass, channels=3, size=32, depth=3, width=1.0, norm_type="instance"):
        super().__init__()
        check_choice("convnet", "norm_type", norm_type, NORMS)
        if depth < 1:
            raise UserError(f"convnet: depth must be >= 1, got {depth}")
        net_width = int(128 * width)
        if net_width < 1:
            raise UserError(f"convnet: width {width} gives {net_width} channels; use width >= 1/128")
        # Grey-scale inputs get padding 3 on the first conv (28 -> 32), as in the reference.
        s = size + 4 if channels == 1 else size
        conv, norm, act, pool = [], [], [], []
        in_ch = channels
        for d in range(depth):
            conv.append(nn.Conv2d(in_ch, net_width, 3, padding=3 if channels == 1 and d == 0 else 1))
            if norm_type != "none":
                norm.append(_norm(norm_type, net_width, s, s))
            act.append(nn.ReLU())
            pool.append(nn.AvgPool2d(2, 2))
            in_ch, s = net_width, s // 2
            if s < 1:
                raise UserError(f"convnet: depth {depth} pools a {size}x{size} input to nothing; "
                                f"use depth <= {d}")
        # Keys must read layers.conv.{d}.*, layers.norm.{d}.* to load official checkpoints.
        self.layers = nn.ModuleDict({"conv": nn.ModuleList(conv), "norm": nn.ModuleList(norm),
                                     "act": nn.ModuleList(act), "pool": nn.ModuleList(pool)})
        self.feature_dim = net_width * s * s
        self.classifier = nn.Linear(self.feature_dim, nclass)

    def reset_parameters(self):
        """Fresh initial weights in place, drawn in construction order (the draws a new model takes)."""
        layers = self.layers
        for d in range(len(layers["conv"])):
            layers["conv"][d].reset_parameters()
            if len(layers["norm"]):
                layers["norm"][d].reset_parameters()
        self.classifier.reset_parameters()

    def forward(self, x, return_features=False):
        """Logits (B, nclass), or (logits, flattened last-block output (B, feature_dim))."""
        layers = self.layers
        for d in range(len(layers["conv"])):
            x = layers["conv"][d](x)
            if len(layers["norm"]):
                x = layers["norm"][d](x)
            x = layers["pool"][d](layers["act"][d](x))
        feat = x.flatten(1)
        logits = self.classifier(feat)
        return (logits, feat) if return_features else logits
