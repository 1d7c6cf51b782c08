"""The two update schedules: SGD steps on the synthetic pixels for the inner-class view (`align`) and the
inter-class view (`calibrate`), each over this process's classes.

per_class (the official code's, DANCE.py `condense`): one step per class per view, all through one optimiser whose
momentum buffer every class shares, so a step for one class also moves the others by their momentum.
joint: one step per view over all classes, its loss the sum of the per-class losses, the siamese augmentation
still drawn per class; the networks see `class_chunk` classes at a time (the same loss and step up to the order
in which float gradients are summed, with one chunk's activations in memory instead of every class's). With keyed
draws and a chunk of one class, every class's step is computed alone from its own draws, so it is the same bits
whichever process owns the class.

`aug(x, groups)` normalises and augments a batch, one siamese draw per class (`groups`: each image's global class
id); `draws` are the iteration's keyed draws (data/streams.py), which pick the synthetic subsets.
"""
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from condense.losses import calibration_loss, inner_class_loss
from training.recipe import autocast


@dataclass(frozen=True)
class UpdateSettings:
    """What the steps take from the flags."""
    batch_syn_max: int                     # decoded synthetic images per class per step (0: all)
    iter_calib: int                        # calibration sweeps per iteration
    class_chunk: int = 0                   # joint: classes per network pass (0: all at once)
    precision: str = "fp32"                # the network passes: fp32, or bf16 autocast
    align: Callable = inner_class_loss     # the inner-class discrepancy (condense/losses.py)
    adversary: Optional[object] = None     # trained to maximise the alignment after each step (NCFM's sampler)


def features(net, x, precision="fp32"):
    """Penultimate features of `net` (the vector feeding its classifier), in fp32 for the loss."""
    with autocast(x.device, precision):
        return net(x, return_features=True)[1].float()


def logits(net, x, precision="fp32"):
    """The classifier's output of `net`, in fp32 for the loss."""
    with autocast(x.device, precision):
        return net(x).float()


def step(optimizer, loss, adversary=None):
    """One SGD step on the synthetic pixels, then the adversary's ascent step on the same loss, if any; returns the
    loss as a detached tensor."""
    optimizer.zero_grad(set_to_none=True)
    if adversary is not None:
        adversary.zero_grad()
    loss.backward()
    optimizer.step()
    if adversary is not None:
        adversary.step()
    return loss.detach()


def step_in_chunks(optimizer, z, sizes, loss_of, adversary=None):
    """One SGD step on the sum over the parts of z (split by `sizes`) of loss_of(i, part), then the adversary's
    ascent step on that sum, if any.

    Each part's network pass is backpropagated to the part at once, so one chunk's activations live at a
    time; z's gradient then goes once through the graph that made z (decoding, augmentation).
    """
    optimizer.zero_grad(set_to_none=True)
    if adversary is not None:
        adversary.zero_grad()
    parts = [part.detach().requires_grad_() for part in z.split(sizes)]
    total = 0.0
    for i, part in enumerate(parts):
        loss = loss_of(i, part)
        loss.backward()
        total = total + loss.detach()
    z.backward(torch.cat([part.grad for part in parts]))
    optimizer.step()
    if adversary is not None:
        adversary.step()
    return total


def class_chunks(nclass, chunk):
    """(first, end) class ranges of `chunk` classes each (0: one range of all)."""
    chunk = chunk or nclass
    return [(c, min(c + chunk, nclass)) for c in range(0, nclass, chunk)]


def align_per_class(synset, sampler, encoder, aug, optimizer, settings, draws=None):
    """Inner-class view, one step per class: real and synthetic images of class c share one DSA draw, and the
    alignment of their features in the middle `encoder` is the step's loss. Returns the summed loss."""
    inner = 0.0
    for c in range(synset.nclass):
        real, syn = sampler.sample(c), synset.sample(c, settings.batch_syn_max, draws)
        x = torch.cat([real, syn])
        z = aug(x, groups=x.new_full((len(x),), synset.first_class + c, dtype=torch.long))  # one siamese draw
        with torch.no_grad():
            feat_real = features(encoder, z[:len(real)], settings.precision)
        feat_syn = features(encoder, z[len(real):], settings.precision)
        loss = settings.align(feat_real, feat_syn, classes=(synset.first_class + c,), draws=draws)
        inner += step(optimizer, loss, settings.adversary)
    return inner


def calibrate_per_class(synset, expert, aug, optimizer, settings, draws=None):
    """Inter-class view, `iter_calib` sweeps of one step per class on the trained expert's cross-entropy of the
    augmented synthetic images. Returns the summed loss."""
    inter = 0.0
    for _ in range(settings.iter_calib):
        for c in range(synset.nclass):
            syn = synset.sample(c, settings.batch_syn_max, draws)
            labels = torch.full((len(syn),), synset.first_class + c, device=syn.device)
            inter += step(optimizer, calibration_loss(logits(expert, aug(syn, groups=labels), settings.precision),
                                                      labels))
    return inter


def _decoded_with_groups(synset, settings, draws):
    """Every class's decoded synthetic images, flattened class-major, and their class ids within this share."""
    syn = synset.decoded_per_class(settings.batch_syn_max, draws=draws)
    nclass, m = syn.shape[:2]
    return syn.flatten(0, 1), torch.arange(nclass, device=syn.device).repeat_interleave(m), m


def align_joint(synset, sampler, encoder, aug, optimizer, settings, draws=None):
    """Inner-class view, one step for every class: the loss is the sum of the per-class alignments, computed
    chunk by chunk. Returns the loss."""
    chunks = class_chunks(synset.nclass, settings.class_chunk)
    real, groups_real = sampler.sample_all()
    syn, groups_syn, m = _decoded_with_groups(synset, settings, draws)
    z = aug(torch.cat([real, syn]), groups=torch.cat([groups_real, groups_syn]) + synset.first_class)
    real_sizes = [sum(sampler.sizes[a:b]) for a, b in chunks]
    z_real, groups_real = z[:len(real)].split(real_sizes), groups_real.split(real_sizes)

    def loss(i, part):
        a, b = chunks[i]
        with torch.no_grad():
            feat_real = features(encoder, z_real[i], settings.precision)
        return settings.align(feat_real, features(encoder, part, settings.precision), groups_real[i] - a,
                              groups_syn[a * m:b * m] - a, b - a, counts=(sampler.sizes[a:b], [m] * (b - a)),
                              classes=range(synset.first_class + a, synset.first_class + b), draws=draws)

    return step_in_chunks(optimizer, z[len(real):], [(b - a) * m for a, b in chunks], loss, settings.adversary)


def calibrate_joint(synset, expert, aug, optimizer, settings, draws=None):
    """Inter-class view, `iter_calib` steps each on the sum over classes of the expert's per-class cross-entropy.
    Returns the summed loss."""
    chunks, inter = class_chunks(synset.nclass, settings.class_chunk), 0.0
    for _ in range(settings.iter_calib):
        syn, groups, m = _decoded_with_groups(synset, settings, draws)
        labels = groups + synset.first_class  # the expert's classes are the dataset's
        z = aug(syn, groups=labels)
        inter += step_in_chunks(optimizer, z, [(b - a) * m for a, b in chunks], lambda i, part: calibration_loss(
            logits(expert, part, settings.precision), labels[chunks[i][0] * m:chunks[i][1] * m]))
    return inter


# --update: (align, calibrate) of each schedule
SCHEDULES = {"per_class": (align_per_class, calibrate_per_class), "joint": (align_joint, calibrate_joint)}
