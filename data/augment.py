"""Differentiable Siamese Augmentation (DSA, Zhao & Bilen 2021), input normalisation and CutMix.

As the official code: DSA as its misc/augment.py (`DiffAug`, IDC's), CutMix as its train.py `train_epoch` and
misc/utils.py `rand_bbox`. Every op below is a pure function of x and one parameter per sample; `DiffAug` draws
the parameters and applies them fused, in few operators (`DiffAug.reference` composes the ops one by one).
x is N x C x H x W; "x" indices run along H (dim 2) and "y" indices along W (dim 3), as in the reference.
Per-sample randomness comes from torch, the one host-side choice (which DSA op) from Python's `random`;
`utils.seed_everything` seeds both, so every call is reproducible.
"""
import functools
import math
import random

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
KEYED_COLUMNS = 8  # the most values one call draws per sample: flip 1, color 3, an op 2, cutout 2


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
# Fused application: what one DiffAug call composes from the ops above, in few operators (a GPU launches a
# kernel per operator). Parameters come as N x k x 1 x 1 blocks, so each slice broadcasts against x.
# ----------------------------------------------------------------------------------------------

def _crop_shifts(h, w):
    """The largest crop/translate shift along H and along W."""
    return int(h * CROP_PAD_RATIO + 0.5), int(w * CROP_PAD_RATIO + 0.5)


def _cutout_size(h, w):
    """The cutout window's height and width."""
    return int(h * CUTOUT_RATIO + 0.5), int(w * CUTOUT_RATIO + 0.5)


@functools.lru_cache(maxsize=256)
def _ramp(n, start, dim, device):
    """start, start + 1, ..., start + n - 1 (float) along `dim` (2: H, 3: W) of a 4-D shape, built once."""
    shape = [1, 1, 1, 1]
    shape[dim] = n
    return (torch.arange(n, dtype=torch.float32, device=device) + start).view(shape)


@functools.lru_cache(maxsize=256)
def _column(values, device):
    """A k x 1 x 1 float constant, one value per draw column (broadcasts against N x k x 1 x 1 draws), built once."""
    return torch.tensor(values, dtype=torch.float32, device=device).view(-1, 1, 1)


def _color_affine(x, a, b, c, s=None):
    """a * x + b * m + c * M (+ s): m is x's channel mean per pixel, M its mean per sample."""
    m = x.mean(dim=1, keepdim=True)
    big_m = m.mean(dim=(2, 3), keepdim=True)
    base = c * big_m if s is None else torch.addcmul(s, c, big_m)
    return torch.addcmul(torch.addcmul(base, b, m), a, x)


class _ColorMap(torch.autograd.Function):
    """x -> a * x + b * m + c * M + s. Its linear part is self-adjoint (channel and sample means are orthogonal
    projections), so x's gradient is the same map of the output's gradient without s: 5 operators, no graph."""

    @staticmethod
    def forward(ctx, x, a, b, c, s):
        ctx.save_for_backward(a, b, c)
        return _color_affine(x, a, b, c, s)

    @staticmethod
    def backward(ctx, grad):
        return _color_affine(grad, *ctx.saved_tensors), None, None, None, None


def color_map(x, s, k, q):
    """brightness -> saturation -> contrast as one map, s = (r_b - 0.5) * BRIGHTNESS, k = r_s * SATURATION and
    q = r_c + CONTRAST (N x 1 x 1 x 1 each): x3 = q * k * (x - m) + q * (m - M) + M + s."""
    # Brightness adds s to x, m and M; saturation gives k * (x - m) + m + s, whose sample mean is still M + s
    # (x - m has channel mean 0); contrast then scales the deviation from M + s by q. One channel: m = x.
    a = q * k
    return _ColorMap.apply(x, a, q - a, 1.0 - q, s)


class _Mirror(torch.autograd.Function):
    """`flip` whose gradient is `flip` of the output's gradient (a per-sample mirror is its own adjoint): two
    operators instead of autograd's six."""

    @staticmethod
    def forward(ctx, x, mask):
        ctx.save_for_backward(mask)
        return torch.where(mask, x.flip(3), x)

    @staticmethod
    def backward(ctx, grad):
        mask, = ctx.saved_tensors
        return torch.where(mask, grad.flip(3), grad), None


def _crop_index(shifts, mirror, h, w):
    """Flat index (float, N x 1 x H x W) of crop(flip(x)) into the zero-padded image: row * (W + 2) + col.
    shifts: [ty] ('translate') or [ty, tx], N x 1 x 1 x 1 each, the drawn shift plus the largest (in [0, 2 * shift]);
    mirror: bool N x 1 x 1 x 1 (flip W first) or None."""
    sx, sy = _crop_shifts(h, w)
    dev = shifts[0].device
    # Out-of-image reads clamp onto the zero border, as `crop` does.
    rows = _ramp(h, 1, 2, dev) if len(shifts) == 1 else (_ramp(h, 1 - sx, 2, dev) + shifts[1]).clamp_(0, h + 1)
    cols = (_ramp(w, 1 - sy, 3, dev) + shifts[0]).clamp_(0, w + 1)
    if mirror is not None:
        # flip(x)'s padded column p is x's padded column W + 1 - p (the borders 0 and W + 1 are both zero)
        cols = torch.where(mirror, (w + 1) - cols, cols)
    return torch.add(cols, rows, alpha=w + 2)


def _cutout_window(ox, oy, h, w):
    """True inside each sample's cutout window (rows ox - ch // 2 .. ox - ch // 2 + ch - 1, columns alike):
    N x 1 x H x W. Drawn centres (0 <= ox < H + 1 - ch % 2) put the window across the image, so `cutout`'s clamps
    change nothing: a pixel is inside when it lies within (ch - 1) / 2 of the window's centre."""
    ch, cw = _cutout_size(h, w)
    dev = ox.device
    rows = (_ramp(h, (1 - ch % 2) / 2, 2, dev) - ox).abs_() <= (ch - 1) / 2
    cols = (_ramp(w, (1 - cw % 2) / 2, 3, dev) - oy).abs_() <= (cw - 1) / 2
    return rows & cols


def _gather_padded(x, index):
    """x zero-padded by one pixel, read at a flat index per output pixel (N x 1 x H x W, shared by the channels)."""
    n, c, h, w = x.shape
    flat = F.pad(x, [1, 1, 1, 1]).view(n, c, (h + 2) * (w + 2))
    return flat.gather(2, index.long().view(n, 1, h * w).expand(n, c, h * w)).view(n, c, h, w)


def _theta(name, params):
    """N x 2 x 3 sampling matrices of `scale` (params: [sx - lo, sy - lo]) or `rotate` (params: [angle]), each
    N x 1 x 1 x 1: the matrices `scale` and `rotate` stack, from constant patterns instead of stacks."""
    dev = params[0].device
    if name == "scale":
        # params are u * (SCALE_RATIO - lo); adding lo here rounds as the reference's u * (...) + lo
        lo = 1.0 / SCALE_RATIO
        base = _const(((lo, 0.0, 0.0), (0.0, lo, 0.0)), torch.float32, dev)
        first = _const(((1.0, 0.0, 0.0), (0.0, 0.0, 0.0)), torch.float32, dev)
        second = _const(((0.0, 0.0, 0.0), (0.0, 1.0, 0.0)), torch.float32, dev)
        theta = torch.addcmul(torch.addcmul(base, params[0], first), params[1], second)
    else:
        eye = _const(((1.0, 0.0, 0.0), (0.0, 1.0, 0.0)), torch.float32, dev)
        turn = _const(((0.0, -1.0, 0.0), (1.0, 0.0, 0.0)), torch.float32, dev)
        theta = torch.addcmul(torch.cos(params[0]) * eye, torch.sin(params[0]), turn)
    return theta.view(-1, 2, 3)


# ----------------------------------------------------------------------------------------------
# DiffAug: parameter draws and composition.
# ----------------------------------------------------------------------------------------------

def _dense_group_ids(groups):
    """Relabel arbitrary group ids as 0..(#groups - 1) without a host sync (sort, then count changes)."""
    s, order = torch.sort(groups)
    rank = F.pad(torch.cumsum(s[1:] != s[:-1], 0), [1, 0])  # the changes before each sorted position
    return torch.empty_like(order).scatter_(0, order, rank)


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

    def _stream_draws(self, x, groups):
        """(uniform, integers, choose) drawing from the global torch and Python streams."""
        idx, g = self._group_index(x, groups)
        dev = x.device

        # NOTE(reference): batch mode draws with torch instead of numpy, through the same (G,) path.
        def uniform():
            return torch.rand(g, device=dev)[idx]

        def integers(low, high):  # uniform on [low, high)
            return torch.randint(low, high, (g,), device=dev)[idx]

        return uniform, integers, random.randrange

    @staticmethod
    def _keyed_draws(x, groups, draws):
        """(uniform, integers, choose) reading the columns of this call's per-class table in turn."""
        if groups is None:
            raise ValueError("keyed draws need the class id of every sample (groups)")
        call = draws.next_call()
        table = draws.table(KEYED_COLUMNS, call)[groups.to(x.device).long()]
        columns = iter(table.unbind(1))

        def uniform():
            return next(columns)

        def integers(low, high):  # uniform on [low, high)
            return (low + (uniform() * (high - low)).long()).clamp_(max=high - 1)

        return uniform, integers, lambda n: draws.choice(n, call)

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

    def __call__(self, x, groups=None, draws=None):
        """Augment x (N x C x H x W); one draw per sample, per batch (batch=True) or per group.

        With `draws` (a data.streams.IterationDraws), `groups` holds each sample's class id and class c's
        parameters are row c of a table drawn for every class: the same whichever other classes are in x.
        Computes what `reference` computes from the same draws, fused: one colour map, and crop, its flip and
        cutout one gather.
        """
        if not self.enabled:
            return x
        _, _, h, w = x.shape
        name, p = self._draw(x, groups, draws)
        mirror = p["flip"][0] < PROB_FLIP if self.flip else None
        if self.color:
            x = color_map(x, *(v.to(x.dtype) for v in p["color"]))
        window = _cutout_window(*p["cutout"], h, w) if self.cutout else None
        if name in ("crop", "translate"):
            # flip and colour commute (the colour map is per pixel, its means flip-invariant)
            index = _crop_index(p[name], mirror, h, w)
            if window is not None:
                index = index.masked_fill_(window, 0.0)  # padded pixel 0 is a zero border pixel
            return _gather_padded(x, index)
        if mirror is not None:
            # not folded into the sampling grid: bilinear weights at -u and u round apart by ~W * 1e-7
            x = _Mirror.apply(x, mirror)
        if name is not None:
            x = _affine(x, _theta(name, p[name]))
        if window is not None:
            x = x.masked_fill(window, 0.0)
        return x.contiguous()

    def _columns(self, name, h, w):
        """One call's draws in the reference's order: {part: [(scale, shift), ...]} for the uniform columns
        (parameter u * scale + shift, rounded once as the reference's formula), then {part: [span, ...]} for the
        integer ones (low + an offset in [0, span)), last: crop, translate and cutout follow the others."""
        lo, rad = 1.0 / SCALE_RATIO, math.radians(ROTATE_DEGREES)
        uniform, integer = {}, {}
        if self.flip:
            uniform["flip"] = [(1.0, 0.0)]
        if self.color:
            uniform["color"] = [(BRIGHTNESS, -0.5 * BRIGHTNESS), (SATURATION, 0.0), (1.0, CONTRAST)]
        if name == "scale":
            # + lo in `_theta`: two roundings, as the reference (bilinear sampling turns an ulp into ~W * 1e-7)
            uniform[name] = [(SCALE_RATIO - lo, 0.0)] * 2
        elif name == "rotate":
            uniform[name] = [(2 * rad, -rad)]
        elif name is not None:
            sx, sy = _crop_shifts(h, w)
            integer[name] = [2 * sy + 1, 2 * sx + 1] if name == "crop" else [2 * sy + 1]
        if self.cutout:
            ch, cw = _cutout_size(h, w)
            integer["cutout"] = [h + 1 - ch % 2, w + 1 - cw % 2]
        return uniform, integer

    def _draw(self, x, groups, draws):
        """(op name or None, {part: [N x 1 x 1 x 1 column, ...]}): the reference's draws of one call, read as one
        block (uniform parameters, then integer offsets), transformed with one operator and split with one."""
        if draws is not None and groups is None:
            raise ValueError("keyed draws need the class id of every sample (groups)")
        n, _, h, w = x.shape
        call = None if draws is None else draws.next_call()
        name = None
        if self.ops:
            pick = random.randrange(len(self.ops)) if draws is None else draws.choice(len(self.ops), call)
            name = self.ops[pick]
        uniform, integer = self._columns(name, h, w)
        maps = [m for part in uniform.values() for m in part]
        spans = [s for part in integer.values() for s in part]
        nf = len(maps)
        if draws is None:
            block = self._stream_block(x, groups, nf, spans)
            maps += [(1.0, 0.0)] * len(spans)  # the stream draws the offsets themselves
        else:
            block = draws.table(KEYED_COLUMNS, call)[groups.to(x.device).long()].view(n, KEYED_COLUMNS, 1, 1)
            maps += [(float(s), 0.0) for s in spans] + [(1.0, 0.0)] * (KEYED_COLUMNS - nf - len(spans))
        if any(m != (1.0, 0.0) for m in maps):
            scale, shift = zip(*maps)
            block = torch.addcmul(_column(shift, x.device), block, _column(scale, x.device))
        if draws is not None and spans:
            # the keyed `integers`: offset min(floor(u * span), span - 1), in place on the integer columns
            top = _column(tuple(s - 1.0 for s in spans), x.device)
            block[:, nf:nf + len(spans)].clamp_(max=top).floor_()
        columns = iter(block.split(1, dim=1))
        return name, {part: [next(columns) for _ in spec] for part, spec in {**uniform, **integer}.items()}

    def _stream_block(self, x, groups, uniforms, spans):
        """The reference's stream draws as one N x k x 1 x 1 block: `uniforms` U[0, 1) columns, then one integer
        offset in [0, span) per span (randint(0, span) draws what randint(low, low + span) does, less low)."""
        n, dev = x.shape[0], x.device
        index, g = self._group_index(x, groups) if groups is not None else (None, 1 if self.batch else n)
        cols = [torch.rand(g, device=dev) for _ in range(uniforms)]
        cols += [torch.randint(0, s, (g,), device=dev, dtype=torch.float32) for s in spans]
        block = torch.stack(cols, 1)
        if index is not None:
            block = block[index]
        block = block.view(-1, len(cols), 1, 1)
        return block if block.shape[0] == n else block.expand(n, -1, -1, -1)

    def reference(self, x, groups=None, draws=None):
        """`__call__` as the per-op composition (flip, brightness, saturation, contrast, one op, cutout): the
        fused call is checked against it, from the same draws."""
        if not self.enabled:
            return x
        _, _, h, w = x.shape
        if draws is not None:
            uniform, integers, choose = self._keyed_draws(x, groups, draws)
        else:
            uniform, integers, choose = self._stream_draws(x, groups)
        if self.flip:
            x = flip(x, uniform() < PROB_FLIP)
        if self.color:
            x = brightness(x, uniform())
            x = saturation(x, uniform())
            x = contrast(x, uniform())
        if self.ops:
            # One op per call, shared by the whole batch (the reference's single_aug=True).
            # NOTE(reference): chosen with Python's generator (seeded with the run) instead of np.random.randint:
            # the host needs the choice, and drawing it on the host reads nothing back from the device.
            name = self.ops[choose(len(self.ops))]
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


# ----------------------------------------------------------------------------------------------
# torchvision-style ImageNet training augmentation (section 2.4: transform_imagenet with augment=True,
# size=0, rrc=True, rrc_size = image size), used instead of DSA to train evaluation networks on ImageNet.
# Per sample, on [0, 1] pixels before normalisation: RandomResizedCrop(scale=(0.5, 1)) -> RandomHorizontalFlip
# -> the official ColorJitter(0.4, 0.4, 0.4) (random order of three lerps) -> Lighting(0.1).
# Crop boxes are (top, left, height, width) in pixels, with top/height along H (dim 2), left/width along W (dim 3).
# ----------------------------------------------------------------------------------------------

RRC_SCALE = (0.5, 1.0)
RRC_RATIO = (3.0 / 4.0, 4.0 / 3.0)
RRC_TRIES = 10
JITTER = 0.4  # brightness, contrast and saturation strength of the official ColorJitter
LIGHTING_STD = 0.1
LIGHTING_EIGVAL = (0.2175, 0.0188, 0.0045)
LIGHTING_EIGVEC = ((-0.5675, 0.7192, 0.4009),
                   (-0.5808, -0.0045, -0.8140),
                   (-0.5836, -0.6948, 0.4203))
GRAY_WEIGHTS = (0.299, 0.587, 0.114)
JITTER_OPS = ("brightness", "contrast", "saturation")  # the op codes 0, 1, 2 of `color_jitter`'s order


@functools.lru_cache(maxsize=64)
def _const(values, dtype, device):
    """A constant tensor built once per (values, dtype, device), so no CPU tensor is copied per call."""
    return torch.tensor(values, dtype=dtype, device=device)


def rrc_fallback_box(height, width, ratio=RRC_RATIO):
    """torchvision's RandomResizedCrop fallback: the centre crop with the aspect ratio clamped into `ratio`."""
    in_ratio = float(width) / float(height)
    if in_ratio < min(ratio):
        w = width
        h = int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        h = height
        w = int(round(h * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def rrc_boxes(height, width, area_frac, log_ratio, pos, ratio=RRC_RATIO):
    """RandomResizedCrop boxes from given draws, as torchvision's `RandomResizedCrop.get_params` defines them.

    area_frac and log_ratio are (N, T): try t of sample n targets the area area_frac * H * W and the aspect
    ratio w / h = exp(log_ratio), giving w = round(sqrt(area * ratio)) and h = round(sqrt(area / ratio)).
    The first try with 0 < w <= W and 0 < h <= H wins; its top-left corner is top = floor(pos[:, 0] * (H - h + 1)),
    left = floor(pos[:, 1] * (W - w + 1)) with pos ~ U[0, 1) of shape (N, 2) (i.e. randint(0, H - h + 1) etc.).
    Samples where no try fits get `rrc_fallback_box`. Returns long tensors (top, left, h, w), each (N,).
    """
    area = area_frac * float(height * width)
    aspect = torch.exp(log_ratio)
    w = torch.round(torch.sqrt(area * aspect)).long()
    h = torch.round(torch.sqrt(area / aspect)).long()
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = torch.argmax(fits.to(torch.uint8), dim=1, keepdim=True)  # the first fitting try (0 when none fits)
    w = w.gather(1, first).squeeze(1)
    h = h.gather(1, first).squeeze(1)
    top = torch.minimum(torch.floor(pos[:, 0] * (height - h + 1)).long(), height - h)
    left = torch.minimum(torch.floor(pos[:, 1] * (width - w + 1)).long(), width - w)
    any_fit = fits.any(dim=1)
    fb = rrc_fallback_box(height, width, ratio)
    top, left, h, w = (torch.where(any_fit, v, torch.full_like(v, f)) for v, f in zip((top, left, h, w), fb))
    return top, left, h, w


def sample_rrc_boxes(n, height, width, scale=RRC_SCALE, ratio=RRC_RATIO, tries=RRC_TRIES, device=None):
    """Draw N RandomResizedCrop boxes (area fraction ~ U(scale), log-ratio ~ U(log ratio)) on `device`."""
    area_frac = torch.rand(n, tries, device=device) * (scale[1] - scale[0]) + scale[0]
    lo, hi = math.log(ratio[0]), math.log(ratio[1])
    log_ratio = torch.rand(n, tries, device=device) * (hi - lo) + lo
    pos = torch.rand(n, 2, device=device)
    return rrc_boxes(height, width, area_frac, log_ratio, pos, ratio)


def resized_crop(x, top, left, height, width, size=None):
    """Crop each sample's box (top, left, height, width: (N,) each) and resize it to `size` (default: x's H x W).

    Bilinear sampling (grid_sample, align_corners=False) at the source pixel coordinates of
    F.interpolate(crop, size, mode='bilinear', align_corners=False): output pixel k reads the crop at
    (k + 0.5) * crop_size / out_size - 0.5, clamped into the box, so the result equals a bilinear resize of
    the crop without antialiasing. NOTE(reference): torchvision's resize antialiases when it shrinks; with
    size = the image size (the official rrc_size) a box never exceeds the output, so it only ever enlarges
    and antialiasing would change nothing.
    """
    n, _, in_h, in_w = x.shape
    out_h, out_w = (in_h, in_w) if size is None else ((size, size) if isinstance(size, int) else tuple(size))

    def coords(start, length, out, full):
        # Source pixel coordinates (N, out) of the resize, clamped into [start, start + length - 1], then
        # mapped to grid_sample's normalised coordinates (align_corners=False: pixel p -> (2p + 1) / full - 1).
        start = start.to(torch.float32).view(n, 1)
        length = length.to(torch.float32).view(n, 1)
        k = torch.arange(out, device=x.device, dtype=torch.float32).view(1, out)
        src = (k + 0.5) * (length / out) - 0.5
        src = torch.minimum(src.clamp(min=0.0), length - 1.0) + start
        return (2.0 * src + 1.0) / full - 1.0

    gy = coords(top, height, out_h, in_h).view(n, out_h, 1).expand(n, out_h, out_w)
    gx = coords(left, width, out_w, in_w).view(n, 1, out_w).expand(n, out_h, out_w)
    grid = torch.stack([gx, gy], dim=-1).to(x.dtype)  # grid_sample's last dim is (x = width, y = height)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def grayscale(x):
    """0.299 R + 0.587 G + 0.114 B, as an N x 1 x H x W tensor (the official Grayscale broadcasts it to 3 channels)."""
    wts = _const(GRAY_WEIGHTS, x.dtype, x.device).view(1, 3, 1, 1)
    return (x * wts).sum(dim=1, keepdim=True)


def color_jitter(x, order, alpha):
    """The official ColorJitter with a per-sample op order.

    order: (N, 3) long, a permutation of the op codes 0 = brightness, 1 = contrast, 2 = saturation per sample
    (step s applies op order[:, s]); alpha: (N, 3), the lerp weight of each op (indexed by op code).
    Every op is x.lerp(target, alpha), so one lerp per step with a per-sample target does all three ops.
    """
    for s in range(order.shape[1]):
        op = order[:, s].view(-1, 1, 1, 1)
        gray = grayscale(x)
        target = torch.where(op == 0, torch.zeros_like(gray),
                             torch.where(op == 1, gray.mean(dim=(1, 2, 3), keepdim=True), gray))
        a = alpha.gather(1, order[:, s:s + 1]).squeeze(1)
        x = torch.lerp(x, target.expand_as(x), _per_sample(a, x))
    return x


def lighting(x, alpha):
    """AlexNet-style PCA lighting: channel i gets + sum_j eigvec[i, j] * alpha[:, j] * eigval[j]; alpha is (N, 3)."""
    eigvec = _const(LIGHTING_EIGVEC, x.dtype, x.device)
    eigval = _const(LIGHTING_EIGVAL, x.dtype, x.device)
    rgb = (eigvec.unsqueeze(0) * (alpha.to(x.dtype) * eigval).unsqueeze(1)).sum(dim=2)  # (N, 3)
    return x + rgb.view(-1, 3, 1, 1)


class ImageNetAug:
    """The official ImageNet training augmentation, vectorised over the batch with independent draws per sample.

    `aug(x)` maps a float batch N x 3 x H x W of [0, 1] pixels (any device; normalise afterwards) to a new
    batch: RandomResizedCrop(size, scale, ratio) (if rrc) -> horizontal flip with probability flip_p ->
    ColorJitter(brightness, contrast, saturation) in a random order per sample -> Lighting(alphastd).
    size=None keeps the input's H x W (the official rrc_size equals the image size); size only applies with rrc
    (an int or (height, width)). With rrc=False the crop is skipped. All draws use torch's
    generators on x's device, so `torch.manual_seed` makes it reproducible; x is never modified.
    """

    def __init__(self, size=None, scale=RRC_SCALE, ratio=RRC_RATIO, rrc=True, flip_p=PROB_FLIP,
                 brightness=JITTER, contrast=JITTER, saturation=JITTER, alphastd=LIGHTING_STD):
        self.size = size
        self.scale = tuple(scale)
        self.ratio = tuple(ratio)
        self.rrc = rrc
        self.flip_p = flip_p
        self.jitter = (brightness, contrast, saturation)  # indexed by the op codes of `color_jitter`
        self.alphastd = alphastd

    def __repr__(self):
        b, c, s = self.jitter
        return (f"ImageNetAug(size={self.size}, scale={self.scale}, ratio={self.ratio}, rrc={self.rrc}, "
                f"flip_p={self.flip_p}, brightness={b}, contrast={c}, saturation={s}, alphastd={self.alphastd})")

    def __call__(self, x):
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"ImageNetAug expects an RGB batch N x 3 x H x W, got shape {tuple(x.shape)}")
        n, _, h, w = x.shape
        dev = x.device
        if self.rrc:
            top, left, bh, bw = sample_rrc_boxes(n, h, w, self.scale, self.ratio, device=dev)
            x = resized_crop(x, top, left, bh, bw, self.size)
        x = flip(x, torch.rand(n, device=dev) < self.flip_p)
        order = torch.argsort(torch.rand(n, 3, device=dev), dim=1)  # a uniform random permutation per sample
        strength = _const(self.jitter, torch.float32, dev)
        alpha = (torch.rand(n, 3, device=dev) * 2.0 - 1.0) * strength  # U(-v, v) per op and sample
        x = color_jitter(x, order, alpha)
        x = lighting(x, torch.randn(n, 3, device=dev) * self.alphastd)
        return x.contiguous()


# ----------------------------------------------------------------------------------------------
# CutMix for N networks trained at once (training/vectorised.py). Network i mixes its own batch x[i] with its own
# decision, lambda, partner permutation and box, each drawn exactly as `cutmix` draws them; the pastes are
# one masked select on the device, built from the per-network box coordinates.
# ----------------------------------------------------------------------------------------------

def cutmix_draws(mix, batch, h, w, beta=1.0):
    """Host-side CutMix draws of N networks; returns CPU tensors (perm (N, B), boxes (N, 4), ratio (N,) float64).

    `mix` holds N booleans. Network i with mix[i] draws lambda, a permutation of its `batch` images and the box
    centre in `cutmix`'s order from torch's CPU generator (so one network draws exactly what `cutmix` would);
    the others draw nothing and keep their batch: identity permutation, empty box, ratio 1. A box row is
    rand_bbox's (x1, y1, x2, y2): rows x1:x2 (dim H) and columns y1:y2 (dim W); ratio is the kept area fraction.
    """
    n = len(mix)
    perm = torch.arange(batch).repeat(n, 1)
    boxes = torch.zeros(n, 4, dtype=torch.long)
    ratio = torch.ones(n, dtype=torch.float64)
    for i in range(n):
        if mix[i]:
            lam = float(torch.distributions.Beta(torch.tensor(float(beta)), torch.tensor(float(beta))).sample())
            perm[i] = torch.randperm(batch)
            cx, cy = int(torch.randint(h, (1,))), int(torch.randint(w, (1,)))
            x1, y1, x2, y2 = rand_bbox(h, w, lam, cx, cy)
            boxes[i] = torch.tensor([x1, y1, x2, y2])
            ratio[i] = 1.0 - (x2 - x1) * (y2 - y1) / (h * w)  # in double, as `cutmix` computes it
    return perm, boxes, ratio


def box_masks(boxes, h, w):
    """Boolean (N, H, W) masks, True inside each row's box (x1, y1, x2, y2): rows x1:x2, columns y1:y2."""
    rows = torch.arange(h, device=boxes.device).view(1, h)
    cols = torch.arange(w, device=boxes.device).view(1, w)
    inside_rows = (rows >= boxes[:, 0:1]) & (rows < boxes[:, 2:3])
    inside_cols = (cols >= boxes[:, 1:2]) & (cols < boxes[:, 3:4])
    return inside_rows.unsqueeze(2) & inside_cols.unsqueeze(1)


def cutmix_many(x, y, perm, boxes):
    """Per-network CutMix of x (N, B, C, H, W) and labels y (N, B); returns (x_mixed, y_b), x untouched.

    perm (N, B) and boxes (N, 4) (long, on x's device) come from `cutmix_draws`: inside network i's box,
    image j shows x[i, perm[i, j]], as `cutmix` pastes it; y_b[i] = y[i, perm[i]].
    """
    n, _, _, h, w = x.shape
    partner = x[torch.arange(n, device=x.device).view(n, 1), perm]
    mask = box_masks(boxes, h, w).view(n, 1, 1, h, w)
    return torch.where(mask, partner, x), y.gather(1, perm)


def cross_entropy_many(logits, y):
    """Each network's mean cross-entropy: logits (N, B, K), y (N, B) -> (N,)."""
    n, b, k = logits.shape
    return F.cross_entropy(logits.reshape(n * b, k), y.reshape(n * b), reduction="none").view(n, b).mean(1)


def cutmix_loss_many(logits, y, y_b, ratio, rest):
    """Each network's `cutmix_loss`: ratio * CE(logits, y) + rest * CE(logits, y_b), ratio and rest (N,).

    rest = 1 - ratio is passed in, computed in double on the host as `cutmix_loss` computes it.
    """
    return ratio * cross_entropy_many(logits, y) + rest * cross_entropy_many(logits, y_b)
