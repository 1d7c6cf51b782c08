"""The one training recipe (SGD, multistep, DSA, CutMix) and the test pass (REFERENCE 7, 8.2).

Used by pretrain.py on real data and by evaluate.py (and DANCE.py's periodic evaluation) on
condensed data. Data stays on the device: batches are index gathers, not DataLoader workers.
"""
import torch
import torch.nn.functional as F

from data.augment import DiffAug, cutmix, cutmix_loss, normalize
from data.sampler import epoch_batches, gather
from utils import rng_state, set_rng_state


@torch.no_grad()
def test_accuracy(model, split, mean, std, device, batch_size=None):
    """Top-1 accuracy (%) of `model` on a split of uint8/float images, in eval mode."""
    if batch_size is None:  # CPU caches favour small batches (measured in bench/eval_speed.py)
        batch_size = 32 if torch.device(device).type == "cpu" else 1024
    was_training = model.training
    model.eval()
    correct = 0
    labels = split.labels.to(device)
    for start in range(0, len(labels), batch_size):
        index = torch.arange(start, min(start + batch_size, len(labels)))
        x = normalize(gather(split.images, index, device), mean, std)
        correct += (model(x).argmax(1) == labels[start:start + len(index)]).sum()
    model.train(was_training)
    return 100.0 * correct.item() / max(len(labels), 1)


def milestones(epochs):
    """Learning-rate drops (x0.2) at 2/3 and 5/6 of training."""
    return [2 * epochs // 3, 5 * epochs // 6]


class Recipe:
    """Optimiser and augmentation settings shared by expert training and evaluation."""

    def __init__(self, epochs, lr=0.01, momentum=0.9, weight_decay=5e-4, batch_size=64,
                 dsa_strategy="", mix_p=0.5, beta=1.0, eval_interval=0):
        self.epochs, self.lr, self.momentum, self.weight_decay = epochs, lr, momentum, weight_decay
        self.batch_size, self.mix_p, self.beta, self.eval_interval = batch_size, mix_p, beta, eval_interval
        self.dsa_strategy = dsa_strategy
        self.dsa = DiffAug(dsa_strategy, batch=False)

    def as_dict(self):
        """The settings, for logs and result records."""
        return {k: v for k, v in vars(self).items() if k != "dsa"}


def train_epoch(model, optimizer, images, labels, mean, std, recipe, device):
    """One shuffled pass: normalise, per-sample DSA, CutMix with probability mix_p, SGD step."""
    model.train()
    total_loss, correct, seen = 0.0, 0, 0
    for index in epoch_batches(len(labels), recipe.batch_size):
        x = normalize(gather(images, index, device), mean, std)
        y = labels[index.to(labels.device)]
        with torch.no_grad():
            x = recipe.dsa(x)
        if recipe.mix_p > 0 and torch.rand(()).item() < recipe.mix_p:
            x, y_b, ratio = cutmix(x, y, recipe.beta)
            logits = model(x)
            loss = cutmix_loss(logits, y, y_b, ratio)
        else:
            logits = model(x)
            loss = F.cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total_loss += loss.detach() * len(y)
        correct += (logits.argmax(1) == y).sum()
        seen += len(y)
    return float(total_loss) / seen, 100.0 * float(correct) / seen


def fit(model, images, labels, test, mean, std, recipe, device, log=None, progress=None, start=None,
        on_epoch=None):
    """Train `model` with `recipe`; return final and best test accuracy and the test history.

    Test checks happen every `recipe.eval_interval` epochs and after the last epoch. `best` is the
    reference's figure (the best over those checks); `final` is the honest last-epoch accuracy.
    `on_epoch(state)` receives the training state after every epoch; passing such a state back as
    `start` continues that training exactly (weights, optimizer, schedule, history, random streams).
    """
    labels = labels.to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                                weight_decay=recipe.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones(recipe.epochs), gamma=0.2)
    history, first = [], 1
    if start is not None:
        model.load_state_dict(start["model"])
        optimizer.load_state_dict(start["optimizer"])
        scheduler.load_state_dict(start["scheduler"])
        history, first = [tuple(h) for h in start["history"]], start["epoch"] + 1
        set_rng_state(start["rng"])
    for epoch in range(first, recipe.epochs + 1):
        loss, train_acc = train_epoch(model, optimizer, images, labels, mean, std, recipe, device)
        scheduler.step()
        if epoch == recipe.epochs or (recipe.eval_interval and epoch % recipe.eval_interval == 0):
            acc = test_accuracy(model, test, mean, std, device)
            history.append((epoch, acc))
            if log:
                log(f"epoch {epoch}/{recipe.epochs}: train loss {loss:.3f} acc {train_acc:.1f}, test acc {acc:.2f}")
        if progress:
            progress(epoch, loss, train_acc)
        if on_epoch:
            on_epoch({"epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                      "scheduler": scheduler.state_dict(), "history": history, "rng": rng_state()})
    return {"final": history[-1][1], "best": max(a for _, a in history), "history": history}
