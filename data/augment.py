"""Differentiable Siamese Augmentation (DSA, Zhao & Bilen 2021), input normalisation and CutMix.

Spec: REFERENCE.md section 4 (DSA, as in DANCE's misc/augment.py) and section 8.2 (CutMix).
Every op below is a pure function of x and one parameter per sample; `DiffAug` draws the parameters.
x is N x C x H x W; "x" indices run along H (dim 2) and "y" indices along W (dim 3), as in the reference.
All randomness comes from torch, so `torch.manual_seed` makes every call reproducible.
"""
import functools
import math

import torch
import torch.nn.functional as F

from utils import UserError

# Constants of the reference DiffAug (section 4.1).
PROB_FLIP = 0.5
BRIGHTNESS = 1.0
SATURATION = 2.0
CONTRAST = 0.5
CROP_PAD_RATIO = 0.125  # also used by 'translate'
SCALE_RATIO = 1.2
ROTATE_DEGREES = 15.0
CUTOUT_RATIO = 0.5

FLAG_TOKENS = ("flip", "color", "cutout")
OP_TOKENS = ("crop", "scale", "rotate", "translate")


# ----------------------------------------------------------------------------------------------
# Pure, parameterised ops: every parameter tensor has shape (N,), one value per sample.
# ----------------------------------------------------------------------------------------------

def _per_sample(p, x):
    """View a (N,) parameter as N x 1 x 1 x 1 in x's dtype, for broadcasting against x."""
    return p.to(dtype=x.dtype).view(-1, 1, 1, 1)


def flip(x, mask):
    """Mirror the width (dim 3) of the samples where the boolean mask is True."""
    return torch.where(mask.view(-1, 1, 1, 1), x.flip(3), x)


def brightness(x, r):
    """Add the shift (r - 0.5) * 1.0; with r ~ U[0,1) the shift lies in [-0.5, 0.5)."""
    return x + (_per_sample(r, x) - 0.5) * BRIGHTNESS


def saturation(x, r):
    """Scale each pixel's deviation from its channel mean by 2r (identity for 1 channel)."""
    m = x.mean(dim=1, keepdim=True)
    return (x - m) * (_per_sample(r, x) * SATURATION) + m


def contrast(x, r):
    """Scale the deviation from the per-sample mean over C, H, W by r + 0.5."""
    m = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - m) * (_per_sample(r, x) + CONTRAST) + m


def crop(x, tx, ty):
    """Integer translation with zero fill: out[i, j] = x[i + tx, j + ty] inside the image, else 0."""
    n, c, h, w = x.shape
    # One zero pixel on each side; clamping an index into [0, H+1] lands out-of-image reads on the
    # zero border, whatever the shift (section 4.4).
    x_pad = F.pad(x, [1, 1, 1, 1])
    rows = (torch.arange(h, device=x.device).view(1, h) + tx.long().view(n, 1) + 1).clamp(0, h + 1)
    cols = (torch.arange(w, device=x.device).view(1, w) + ty.long().view(n, 1) + 1).clamp(0, w + 1)
    out = x_pad.gather(2, rows.view(n, 1, h, 1).expand(n, c, h, w + 2))
    return out.gather(3, cols.view(n, 1, 1, w).expand(n, c, h, w))


def _affine(x, theta):
    """Resample x through per-sample 2x3 affine matrices (bilinear, zero padding, align_corners=False)."""
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def scale(x, sx, sy):
    """Scale the sampling grid by sx (width) and sy (height); a factor > 1 zooms out."""
    zero = torch.zeros_like(sx)
    theta = torch.stack([torch.stack([sx, zero, zero], -1), torch.stack([zero, sy, zero], -1)], 1)
    return _affine(x, theta)


def rotate(x, theta):
    """Rotate the sampling grid by theta radians: [[cos, -sin, 0], [sin, cos, 0]]."""
    cos, sin, zero = torch.cos(theta), torch.sin(theta), torch.zeros_like(theta)
    mat = torch.stack([torch.stack([cos, -sin, zero], -1), torch.stack([sin, cos, zero], -1)], 1)
    return _affine(x, mat)


def cutout(x, ox, oy, ch, cw):
    """Zero a ch x cw window starting at (ox - ch//2, oy - cw//2), clamped into the image, all channels."""
    n, _, h, w = x.shape
    # The reference scatters zeros at clamp(window indices); clamping is monotone, so the zeroed rows
    # are exactly [clamp(first), clamp(last)] (a window fully outside still zeroes the border row).
    r0 = (ox.long() - ch // 2).clamp(0, h - 1).view(n, 1)
    r1 = (ox.long() - ch // 2 + ch - 1).clamp(0, h - 1).view(n, 1)
    c0 = (oy.long() - cw // 2).clamp(0, w - 1).view(n, 1)
    c1 = (oy.long() - cw // 2 + cw - 1).clamp(0, w - 1).view(n, 1)
    i = torch.arange(h, device=x.device).view(1, h)
    j = torch.arange(w, device=x.device).view(1, w)
    inside = ((i >= r0) & (i <= r1)).view(n, h, 1) & ((j >= c0) & (j <= c1)).view(n, 1, w)
    return x * (~inside).unsqueeze(1).to(x.dtype)


# ----------------------------------------------------------------------------------------------
# DiffAug: parameter draws and composition.
# ----------------------------------------------------------------------------------------------

def _dense_group_ids(groups):
    """Relabel arbitrary group ids as 0..(#groups - 1) without a host sync (sort, then count changes)."""
    order = torch.argsort(groups)
    s = groups[order]
    starts = torch.ones_like(s)
    starts[1:] = (s[1:] != s[:-1]).long()
    rank = torch.cumsum(starts, 0) - 1
    return torch.empty_like(rank).scatter_(0, order, rank)


class DiffAug:
    """Differentiable siamese augmentation (Zhao & Bilen 2021)."""

    def __init__(self, strategy: str, batch: bool = False):
        self.strategy = strategy
        self.batch = batch
        self.flip = self.color = self.cutout = False
        self.ops = []
        self.enabled = strategy.strip().lower() not in ("", "none")
        if not self.enabled:
            return
        for token in strategy.lower().split("_"):
            if token in FLAG_TOKENS:
                setattr(self, token, True)
            elif token in OP_TOKENS:
                self.ops.append(token)
            else:
                # NOTE(reference): the official code only fails (KeyError) when the token is drawn.
                valid = ", ".join(FLAG_TOKENS + OP_TOKENS)
                raise UserError(f"unknown augmentation token {token!r} in {strategy!r}; valid tokens: {valid} "
                                f"(joined by '_'), or 'none'")

    def __repr__(self):
        return f"DiffAug({self.strategy!r}, batch={self.batch})"

    def _group_index(self, x, groups):
        """Return (index (N,), G): sample i uses draw index[i] out of G draws."""
        n = x.shape[0]
        if groups is not None:
            groups = groups.to(x.device).long()
            if groups.shape != (n,):
                raise ValueError(f"groups must have shape ({n},), got {tuple(groups.shape)}")
            # At most N distinct groups; drawing N values avoids reading G back from the device.
            return _dense_group_ids(groups), n
        if self.batch:
            return torch.zeros(n, dtype=torch.long, device=x.device), 1
        return torch.arange(n, device=x.device), n

    def __call__(self, x, groups=None):
        """Augment x (N x C x H x W); one draw per sample, per batch (batch=True) or per group."""
        if not self.enabled:
            return x
        _, _, h, w = x.shape
        idx, g = self._group_index(x, groups)
        dev = x.device

        # NOTE(reference): batch mode draws with torch instead of numpy, through the same (G,) path.
        def uniform():
            return torch.rand(g, device=dev)[idx]

        def integers(low, high):  # uniform on [low, high)
            return torch.randint(low, high, (g,), device=dev)[idx]

        if self.flip:
            x = flip(x, uniform() < PROB_FLIP)
        if self.color:
            x = brightness(x, uniform())
            x = saturation(x, uniform())
            x = contrast(x, uniform())
        if self.ops:
            # One op per call, shared by the whole batch (the reference's single_aug=True).
            # NOTE(reference): chosen with torch's CPU generator instead of np.random.randint.
            name = self.ops[int(torch.randint(len(self.ops), (1,)))]
            if name in ("crop", "translate"):
                sx, sy = int(h * CROP_PAD_RATIO + 0.5), int(w * CROP_PAD_RATIO + 0.5)
                ty = integers(-sy, sy + 1)
                tx = integers(-sx, sx + 1) if name == "crop" else torch.zeros_like(ty)
                x = crop(x, tx, ty)
            elif name == "scale":
                lo = 1.0 / SCALE_RATIO
                x = scale(x, uniform() * (SCALE_RATIO - lo) + lo, uniform() * (SCALE_RATIO - lo) + lo)
            elif name == "rotate":
                x = rotate(x, (uniform() - 0.5) * 2 * math.radians(ROTATE_DEGREES))
        if self.cutout:
            ch, cw = int(h * CUTOUT_RATIO + 0.5), int(w * CUTOUT_RATIO + 0.5)
            ox = integers(0, h + (1 - ch % 2))
            oy = integers(0, w + (1 - cw % 2))
            x = cutout(x, ox, oy, ch, cw)
        return x.contiguous()


@functools.lru_cache(maxsize=64)
def _channel_stats(values, dtype, device):
    """A (1, C, 1, 1) tensor of per-channel values, built once per device (no copy per call)."""
    return torch.tensor(values, dtype=dtype, device=device).view(1, -1, 1, 1)


def normalize(x, mean, std):
    """Per-channel (x - mean) / std; mean and std are sequences or tensors of length C."""
    if torch.is_tensor(mean) or torch.is_tensor(std):
        mean = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        std = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return (x - mean) / std
    return (x - _channel_stats(tuple(mean), x.dtype, x.device)) / _channel_stats(tuple(std), x.dtype, x.device)


# ----------------------------------------------------------------------------------------------
# CutMix (section 8.2), used when training evaluation networks.
# ----------------------------------------------------------------------------------------------

def rand_bbox(H, W, lam, cx, cy):
    """CutMix box (x1, y1, x2, y2) for an image of size H (dim 2) x W (dim 3), centre (cx, cy)."""
    # The reference names these W = x.size(2), H = x.size(3); only the names differ here.
    cut = math.sqrt(1.0 - lam)
    cw, ch = int(H * cut), int(W * cut)
    x1, x2 = min(max(cx - cw // 2, 0), H), min(max(cx + cw // 2, 0), H)
    y1, y2 = min(max(cy - ch // 2, 0), W), min(max(cy + ch // 2, 0), W)
    return x1, y1, x2, y2


def cutmix(x, y, beta=1.0):
    """Paste a box from x[perm] into x; returns (x_mixed, y[perm], ratio of the image kept from x)."""
    n, _, h, w = x.shape
    # NOTE(reference): lam, perm and the box centre come from torch's CPU generator (seedable, no device sync).
    lam = float(torch.distributions.Beta(torch.tensor(float(beta)), torch.tensor(float(beta))).sample())
    perm = torch.randperm(n).to(x.device)
    cx, cy = int(torch.randint(h, (1,))), int(torch.randint(w, (1,)))
    x1, y1, x2, y2 = rand_bbox(h, w, lam, cx, cy)
    # NOTE(reference): the official code pastes in place; a copy leaves the caller's batch untouched.
    mixed = x.clone()
    mixed[:, :, x1:x2, y1:y2] = x[perm, :, x1:x2, y1:y2]
    ratio = 1.0 - (x2 - x1) * (y2 - y1) / (h * w)
    return mixed, y[perm], ratio


def cutmix_loss(logits, y, y_b, ratio):
    """Mixed cross-entropy ratio * CE(logits, y) + (1 - ratio) * CE(logits, y_b)."""
    return ratio * F.cross_entropy(logits, y) + (1.0 - ratio) * F.cross_entropy(logits, y_b)
