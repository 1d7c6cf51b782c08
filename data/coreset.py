"""Real-image baselines at the same budget as a condensed set: random, herding, k-center."""
import torch

from data.augment import normalize
from data.sampler import to_float
from data.synthetic import SyntheticSet


def select_random(count, n):
    """n random positions out of count (repeats only when count < n)."""
    perm = torch.randperm(count)
    return perm[torch.arange(n) % count]


def select_herding(features, n):
    """Herding (Welling 2009): greedily pick points whose running mean tracks the class mean."""
    mu = features.mean(0)
    chosen, total = [], torch.zeros_like(mu)
    available = torch.ones(len(features), dtype=torch.bool, device=features.device)
    for k in range(1, min(n, len(features)) + 1):
        dist = ((mu - (total + features) / k) ** 2).sum(1)
        dist[~available] = float("inf")
        i = int(dist.argmin())
        chosen.append(i)
        available[i] = False
        total += features[i]
    return _fill(torch.tensor(chosen, dtype=torch.long), n)


def select_kcenter(features, n):
    """Greedy k-center: start at the point nearest the mean, then always the farthest point."""
    first = int(((features - features.mean(0)) ** 2).sum(1).argmin())
    chosen = [first]
    nearest = ((features - features[first]) ** 2).sum(1)
    for _ in range(min(n, len(features)) - 1):
        i = int(nearest.argmax())
        chosen.append(i)
        nearest = torch.minimum(nearest, ((features - features[i]) ** 2).sum(1))
    return _fill(torch.tensor(chosen, dtype=torch.long), n)


def _fill(chosen, n):
    """Cycle through the chosen positions when the class has fewer than n images."""
    return chosen[torch.arange(n) % len(chosen)]


SELECTORS = {"herding": select_herding, "kcenter": select_kcenter}


class Selection:
    """Chosen real images per class, served like ClassSampler.first so SyntheticSet.init can tile them."""

    def __init__(self, per_class):
        self.per_class = per_class

    def first(self, c, n):
        return self.per_class[c][:n]


@torch.no_grad()
def embed(net, images, mean, std, batch=500):
    """Penultimate features of a trained network, for herding and k-center."""
    net.eval()
    return torch.cat([net(normalize(to_float(images[i:i + batch]), mean, std), return_features=True)[1]
                      for i in range(0, len(images), batch)])


def real_subset(kind, train, info, ipc, factor, decode_type, device, net=None):
    """ipc storage images per class of real images chosen by `kind`, tiled like mix-init, decoded.

    The stored-pixel budget equals a condensed set's: ipc * factor^2 real images per class.
    herding/kcenter embed the images with `net` (a trained expert).
    """
    per_class = []
    for c in range(info.nclass):
        index = torch.nonzero(train.labels.cpu() == c).flatten()
        images = train.images[index] if torch.is_tensor(train.images) else train.images[index.tolist()]
        n = ipc * factor ** 2
        if kind == "random":
            chosen = select_random(len(index), n)
        else:
            chosen = SELECTORS[kind](embed(net, images.to(device), info.mean, info.std), n).cpu()
        per_class.append(to_float(images[chosen]).to(device))
    synset = SyntheticSet(info.nclass, ipc, info.channels, info.size, factor, decode_type, device)
    synset.init("mix" if factor > 1 else "random", Selection(per_class))
    return synset.decoded()
