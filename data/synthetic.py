"""The learnable synthetic set: pixel storage, initialisation and multi-formation decoding (IDC)."""
import math

import torch
import torch.nn.functional as F

from data.streams import KeyedGenerator
from data.set_files import write_set
from utils import UserError


def decode_zoom(images, factor):
    """Split each image into factor x factor crops and upsample each crop back (the official
    `decode_zoom`, IDC's).

    (n, C, H, W) -> (n * factor^2, C, H, W), crop-major: all images' crop (0,0), then (0,1), ...
    Sizes not divisible by the factor are padded right/bottom with 0.5 first.
    """
    if factor == 1:
        return images
    n, ch, h, w = images.shape
    s = math.ceil(h / factor)
    pad = s * factor - h
    if pad:
        images = F.pad(images, (0, pad, 0, pad), value=0.5)
    crops = images.reshape(n, ch, factor, s, factor, s).permute(2, 4, 0, 1, 3, 5)
    crops = crops.reshape(factor * factor * n, ch, s, s)
    return F.interpolate(crops, size=(h, w), mode="bilinear", align_corners=False)


def decode_multi(images, factor):
    """Decode at every factor 1..factor and concatenate."""
    return torch.cat([decode_zoom(images, f) for f in range(1, factor + 1)])


def decode_bound(images, factor, bound):
    """Decode as many images as fit at the highest factor, the rest at lower ones (the official
    `decode_zoom_bound`)."""
    n = len(images)
    budget, spare, idx, total, out = n, bound - n, 0, 0, []
    for f in range(factor, 0, -1):
        m = max(0, min(spare // (f * f), budget)) if f > 1 else budget
        if m > 0:  # NOTE(reference): empty slices are skipped instead of reaching the upsampler
            out.append(decode_zoom(images[idx:idx + m], f))
        idx, budget, total = idx + m, budget - m, total + m * f * f
        spare = bound - total - budget
        if budget == 0:
            break
    return torch.cat(out)


def decode(images, factor, decode_type="single", bound=128):
    """Decode one class's storage images into training images."""
    if factor == 1:
        return images
    if decode_type == "multi":
        return decode_multi(images, factor)
    if decode_type == "bound":
        return decode_bound(images, factor, bound)
    return decode_zoom(images, factor)


def noise_images(ipc, channels, size, seed, c):
    """Class c's starting noise, N(0.5, 0.25^2) clamped to [0, 1], drawn from a stream keyed by (seed, c)."""
    g = KeyedGenerator(seed, "cpu")("noise", c)
    return (torch.randn(ipc, channels, size, size, generator=g) / 4 + 0.5).clamp_(0, 1)


def tile_mix(images, factor, ipc):
    """Mix init: tile factor^2 groups of ipc real images, nearest-downsampled, into ipc images.

    Tile k = i * factor + j (row-major) holds images k*ipc ... k*ipc + ipc - 1 (the official `Synthesizer.init`).
    """
    _, ch, h, w = images.shape
    out = torch.empty(ipc, ch, h, w, dtype=images.dtype, device=images.device)
    rows = [h // factor + (1 if i < h % factor else 0) for i in range(factor)]
    cols = [w // factor + (1 if j < w % factor else 0) for j in range(factor)]
    top = 0
    for i, th in enumerate(rows):
        left = 0
        for j, tw in enumerate(cols):
            k = i * factor + j
            tile = F.interpolate(images[k * ipc:(k + 1) * ipc], size=(th, tw), mode="nearest")
            out[:, :, top:top + th, left:left + tw] = tile
            left += tw
        top += th
    return out


class SyntheticSet:
    """nclass * ipc storage images in [0,1] pixels, class-major; the only optimised tensor."""

    def __init__(self, nclass, ipc, channels, size, factor=1, decode_type="single", device="cpu", data=None,
                 first_class=0, seed=0):
        """`nclass` classes from global class id `first_class` on (a process's share; default: all classes)."""
        self.nclass, self.ipc, self.factor, self.decode_type = nclass, ipc, factor, decode_type
        self.first_class = first_class
        if data is None:  # each class's noise is keyed by its id: the same in any share of the classes
            data = torch.cat([noise_images(ipc, channels, size, seed, c)
                              for c in range(first_class, first_class + nclass)])
        self.data = data.detach().float().to(device).requires_grad_(True)
        self.targets = torch.arange(first_class, first_class + nclass).repeat_interleave(ipc)

    def init(self, how, sampler):
        """Fill the storage from real data: 'random' (first images), 'mix' (tiled), or 'noise' (keep)."""
        with torch.no_grad():
            for c in range(self.nclass):
                rows = slice(c * self.ipc, (c + 1) * self.ipc)
                if how == "random":
                    self.data[rows] = sampler.first(c, self.ipc)
                elif how == "mix":
                    real = sampler.first(c, self.ipc * self.factor ** 2)
                    self.data[rows] = tile_mix(real, self.factor, self.ipc)
                elif how != "noise":
                    raise UserError(f"unknown --init '{how}'; choose random, mix or noise")

    def decoded_per_class(self, max_size=0, classes=None, bound=None, pixels=None, draws=None):
        """Decoded images of the given classes (all, or a slice), (k, m, C, H, W), differentiable.

        With max_size > 0 and more decoded images than that, a random subset of max_size per class (keyed by
        class id with `draws`, a data.streams.IterationDraws). 'bound' decoding is bounded by `bound`, else by
        max_size (as the official `Synthesizer.sample`). `pixels` replaces the storage (same shape), e.g. by its
        clamped copy.
        """
        pixels = self.data if pixels is None else pixels
        storage = pixels.view(self.nclass, self.ipc, *pixels.shape[1:])
        if classes is not None:  # a slice keeps this a view (no copy on the per-class hot path)
            storage = storage[classes]
        k, ipc = storage.shape[:2]
        if self.decode_type == "single" or self.factor == 1:
            # one batched decode of every class, then back to class-major order
            flat = decode_zoom(storage.reshape(k * ipc, *storage.shape[2:]), self.factor)
            out = flat.view(self.factor ** 2, k, ipc, *flat.shape[1:]).transpose(0, 1)
            out = out.reshape(k, self.factor ** 2 * ipc, *flat.shape[1:])
        else:
            bound = bound or max_size or 128
            out = torch.stack([decode(s, self.factor, self.decode_type, bound) for s in storage])
        m = out.shape[1]
        if 0 < max_size < m:
            if draws is not None:
                first = self.first_class + ((classes.start or 0) if classes is not None else 0)
                scores = draws.table(m, draws.next_call())[first:first + k]
            else:
                scores = torch.rand(k, m, device=out.device)
            keep = scores.argsort(dim=1, stable=True)[:, :max_size]
            out = out[torch.arange(k, device=out.device)[:, None], keep]
        return out

    def sample(self, c, max_size, draws=None):
        """Class c's decoded images (at most max_size), differentiable."""
        return self.decoded_per_class(max_size, slice(c, c + 1), draws=draws)[0]

    def decoded(self, bound=128):
        """The whole decoded training set (detached, from [0, 1]-clamped pixels, as saved) and its labels.

        'bound' decodes with bound=128 here, as the reference's evaluation loader does.
        """
        with torch.no_grad():
            per_class = self.decoded_per_class(0, bound=bound, pixels=self.data.detach().clamp(0, 1))
        k, m = per_class.shape[:2]
        labels = torch.arange(k).repeat_interleave(m)
        return per_class.reshape(k * m, *per_class.shape[2:]).detach(), labels

    def save(self, path, description=None):
        """Save the set's files: data_K.pt in the official format and its description (data/set_files.py)."""
        write_set(path, self.data, self.targets, description)
