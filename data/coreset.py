"""Real-image baselines at the same budget as a condensed set: random, herding, k-center."""
import torch


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
