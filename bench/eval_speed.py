"""Seconds per evaluation epoch: the reference's data path vs ours, measured side by side.

Reference path (the official DANCE.py `Synthesizer.loader` and train.py `train_epoch`): the decoded set lives
on the CPU in a TensorDataset whose per-sample transform normalises each image; a DataLoader (batch 64, shuffled,
no workers) collates batches that are then copied to the device; the test pass runs without no_grad.
Ours (training/recipe.py): the decoded set stays on the device, batches are index gathers normalised as a
batch; the test pass runs under no_grad with large batches.
Both then apply the same DSA + CutMix + SGD step. Default shapes: CIFAR-10, IPC 10, factor 2
(400 training images), ConvNet-3, 10,000 test images.

    python bench/eval_speed.py [--device cpu] [--epochs 5]
"""
import argparse
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from data.augment import cutmix, cutmix_loss  # noqa: E402
from data.datasets import Split  # noqa: E402
from models import make_network, model_config  # noqa: E402
from training.recipe import Recipe, test_accuracy, train_epoch  # noqa: E402
from utils import select_device  # noqa: E402

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)


class NormalizedTensors(torch.utils.data.Dataset):
    """The reference's TensorDataset: CPU float images, Normalize applied per sample."""

    def __init__(self, images, labels):
        self.images, self.labels = images.cpu(), labels.cpu()
        self.mean, self.std = torch.tensor(MEAN).view(-1, 1, 1), torch.tensor(STD).view(-1, 1, 1)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return (self.images[i] - self.mean) / self.std, self.labels[i]


def reference_epoch(model, optimizer, loader, recipe, device):
    """One epoch through the reference's loader: per-batch host-to-device copies."""
    model.train()
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        with torch.no_grad():
            x = recipe.dsa(x)
        if torch.rand(()).item() < recipe.mix_p:
            x, y_b, ratio = cutmix(x, y, recipe.beta)
            loss = cutmix_loss(model(x), y, y_b, ratio)
        else:
            loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def reference_test(model, loader, device):
    """The reference's test pass: batch 32 and, as there, without no_grad."""
    model.eval()
    correct = 0
    for x, y in loader:
        correct += (model(x.to(device)).argmax(1) == y.to(device)).sum().item()
    model.train()
    return 100.0 * correct / len(loader.dataset)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device):
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto")
    p.add_argument("--train_images", type=int, default=400)
    p.add_argument("--test_images", type=int, default=10000)
    p.add_argument("--epochs", type=int, default=5, help="timed epochs per path (after one warm-up)")
    p.add_argument("--width", type=float, default=1.0)
    q = p.parse_args()
    device = select_device(q.device)
    torch.manual_seed(0)
    images, labels = torch.rand(q.train_images, 3, 32, 32), torch.arange(q.train_images) % 10
    test = Split(torch.randint(0, 256, (q.test_images, 3, 32, 32), dtype=torch.uint8), torch.arange(q.test_images) % 10)
    recipe = Recipe(epochs=1, dsa_strategy="color_crop_flip_scale_rotate", mix_p=0.5)
    model = make_network({"net_type": "convnet", "config": model_config("convnet", 10, 3, 32, width=q.width)}, device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    train_loader = torch.utils.data.DataLoader(NormalizedTensors(images, labels), batch_size=64, shuffle=True)
    test_loader = torch.utils.data.DataLoader(
        NormalizedTensors(test.images.float() / 255, test.labels), batch_size=32)
    dev_images, dev_labels, dev_test = images.to(device), labels.to(device), test.to(device)
    paths = {
        "reference epoch": lambda: reference_epoch(model, optimizer, train_loader, recipe, device),
        "our epoch": lambda: train_epoch(model, optimizer, dev_images, dev_labels, MEAN, STD, recipe, device),
        "reference test pass": lambda: reference_test(model, test_loader, device),
        "our test pass": lambda: test_accuracy(model, dev_test, MEAN, STD, device),
    }
    times = {name: [] for name in paths}
    for i in range(q.epochs + 1):
        for name, fn in paths.items():  # interleaved, so both paths see the same machine state
            t = timed(fn, device)
            if i:
                times[name].append(t)
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads; {q.train_images} "
          f"training images, {q.test_images} test images, ConvNet-3 width {q.width:g}; median of {q.epochs}")
    for name, t in times.items():
        print(f"  {name:20s}: {statistics.median(t):.3f} s")
    for what in ("epoch", "test pass"):
        ratio = statistics.median(times[f"reference {what}"]) / statistics.median(times[f"our {what}"])
        print(f"  {what}: ours is {ratio:.2f}x the reference's speed")


if __name__ == "__main__":
    main()
