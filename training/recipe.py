"""The one training recipe (SGD, multistep, DSA, CutMix) and the test pass, one network at a time.

Used by pretrain.py on real data and by training/set_accuracy.py on condensed data (the official train.py
`train`); training/vectorised.py trains several networks at once with the same recipe. Data stays on the device:
batches are index gathers, not DataLoader workers.
"""
import torch
import torch.nn.functional as F

from data.augment import DiffAug, ImageNetAug, cutmix, cutmix_loss, normalize
from data.sampler import epoch_batches, gather, to_float
from models import compiled
from utils import rng_state, set_rng_state


def test_batches(split, device, batch_size=None):
    """(float images, labels) of a split in order, batch by batch, on `device`."""
    if batch_size is None:  # CPU caches favour small batches (measured in bench/eval_speed.py)
        batch_size = 32 if torch.device(device).type == "cpu" else 1024
    labels = split.labels.to(device)
    for start in range(0, len(labels), batch_size):
        stop = min(start + batch_size, len(labels))
        if torch.is_tensor(split.images):  # a slice: no index tensor to build or copy
            x = to_float(split.images[start:stop]).to(device, non_blocking=True)
        else:
            x = gather(split.images, torch.arange(start, stop), device)
        yield x, labels[start:stop]


@torch.no_grad()
def test_accuracy(model, split, mean, std, device, batch_size=None, precision="fp32"):
    """Top-1 accuracy (%) of `model` on a split of uint8/float images, in eval mode."""
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=device)
    for x, y in test_batches(split, device, batch_size):
        with autocast(device, precision):
            correct += (model(normalize(x, mean, std)).argmax(1) == y).sum()
    model.train(was_training)
    return 100.0 * correct.item() / max(len(split.labels), 1)


DEFAULT_TEMPERATURE = 4.0  # Hinton et al. 2015's usual distillation temperature (--temperature)


def soft_label_loss(logits, targets, temperature):
    """T^2 * KL(softmax(targets / T) || softmax(logits / T)), summed over classes (the last dim) and averaged over
    the batch (the dim before it): a scalar for (B, K) logits, one loss per network for (N, B, K).

    The knowledge-distillation loss of Hinton et al. 2015 (the T^2 keeps gradient sizes comparable across
    temperatures), which SRe2L, RDED and DD-Ranking's KL criterion train students on condensed sets with.
    """
    log_student = F.log_softmax(logits.float() / temperature, dim=-1)
    log_teacher = F.log_softmax(targets.float() / temperature, dim=-1)
    kl = F.kl_div(log_student, log_teacher, reduction="none", log_target=True).sum(-1)
    return kl.mean(-1) * temperature ** 2


@torch.no_grad()
def teacher_logits(teacher, x):
    """The teacher's logits on a batch, without a graph."""
    return teacher(x)


def milestones(epochs):
    """Learning-rate drops (x0.2) at 2/3 and 5/6 of training."""
    return [2 * epochs // 3, 5 * epochs // 6]


class Recipe:
    """Optimiser and augmentation settings shared by expert training and evaluation."""

    def __init__(self, epochs, lr=0.01, momentum=0.9, weight_decay=5e-4, batch_size=64,
                 dsa_strategy="", mix_p=0.5, beta=1.0, eval_interval=0, eval_aug="dsa", precision="fp32",
                 compile=False, teacher=None, temperature=DEFAULT_TEMPERATURE):
        self.epochs, self.lr, self.momentum, self.weight_decay = epochs, lr, momentum, weight_decay
        self.batch_size, self.mix_p, self.beta, self.eval_interval = batch_size, mix_p, beta, eval_interval
        self.eval_aug, self.precision, self.compile = eval_aug, precision, compile
        # Soft labels: with a teacher (a trained network in eval mode), the loss is soft_label_loss against its
        # predictions on each augmented (and mixed) batch instead of cross-entropy with the set's labels.
        self.teacher, self.temperature = teacher, temperature
        # 'imagenet': the reference's torchvision pipeline on [0, 1] pixels, before normalisation, no DSA
        self.dsa_strategy = dsa_strategy if eval_aug == "dsa" else ""
        self.dsa = DiffAug(self.dsa_strategy, batch=False)
        self.pixel_aug = ImageNetAug() if eval_aug == "imagenet" else None

    def as_dict(self):
        """The settings, for logs and result records (compilation changes how, not what, is computed); a
        hard-label recipe's are those recorded before soft labels existed, so its records and manifests still match."""
        skip = ("dsa", "pixel_aug", "compile", "teacher", "temperature")
        out = {k: v for k, v in vars(self).items() if k not in skip}
        if self.teacher is not None:
            out.update(labels="soft", temperature=self.temperature)
        return out

    def autocast(self, device):
        """The forward passes' precision: fp32, or bf16 autocast (weights and optimiser stay fp32)."""
        return autocast(device, self.precision)


def autocast(device, precision):
    """torch.autocast to bfloat16 for `precision` 'bf16' on `device`, else a no-op context."""
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=precision == "bf16")


def train_epoch(model, optimizer, images, labels, mean, std, recipe, device):
    """One shuffled pass: normalise, per-sample DSA, CutMix with probability mix_p, SGD step (on the labels, or on
    the recipe's teacher's soft labels)."""
    model.train()
    total_loss, correct, seen = 0.0, 0, 0
    index_device = images.device if torch.is_tensor(images) else torch.device("cpu")
    for index in epoch_batches(len(labels), recipe.batch_size, index_device):
        x = gather(images, index, device)
        y = labels[index.to(labels.device)]
        with torch.no_grad():
            if recipe.pixel_aug is not None:
                x = recipe.pixel_aug(x)
            x = recipe.dsa(normalize(x, mean, std))
        mixed = recipe.mix_p > 0 and torch.rand(()).item() < recipe.mix_p
        if mixed:
            x, y_b, ratio = cutmix(x, y, recipe.beta)
        with recipe.autocast(device):
            logits = model(x)
            if recipe.teacher is not None:  # the teacher labels the batch as augmented and mixed (SRe2L, RDED)
                loss = soft_label_loss(logits, teacher_logits(recipe.teacher, x), recipe.temperature)
            elif mixed:
                loss = cutmix_loss(logits, y, y_b, ratio)
            else:
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
    net = compiled(model, recipe.compile)  # shares model's parameters
    for epoch in range(first, recipe.epochs + 1):
        loss, train_acc = train_epoch(net, optimizer, images, labels, mean, std, recipe, device)
        scheduler.step()
        if epoch == recipe.epochs or (recipe.eval_interval and epoch % recipe.eval_interval == 0):
            acc = test_accuracy(net, test, mean, std, device, precision=recipe.precision)
            history.append((epoch, acc))
            if log:
                log(f"epoch {epoch}/{recipe.epochs}: train loss {loss:.3f} acc {train_acc:.1f}, test acc {acc:.2f}")
        if progress:
            progress(epoch, loss, train_acc)
        if on_epoch:
            on_epoch({"epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                      "scheduler": scheduler.state_dict(), "history": history, "rng": rng_state()})
    return {"final": history[-1][1], "best": max(a for _, a in history), "history": history}
