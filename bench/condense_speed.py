"""Seconds per DANCE condensation iteration, per_class vs joint, measured side by side.

Shapes of a real run (default: CIFAR-10, IPC 10, factor 2, ConvNet-3, batch_real 128); the pixels
and expert weights are random, which does not change the cost.

    python bench/condense_speed.py                      # CPU or the accelerator, whichever is present
    python bench/condense_speed.py --device cpu --iters 5
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import DANCE  # noqa: E402
from data.augment import DiffAug, normalize  # noqa: E402
from data.datasets import Split  # noqa: E402
from data.sampler import ClassSampler  # noqa: E402
from data.synthetic import SyntheticSet  # noqa: E402
from models import make_network, model_config  # noqa: E402
from utils import atomic_save, expert_path, select_device  # noqa: E402


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto")
    p.add_argument("--nclass", type=int, default=10)
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--ipc", type=int, default=10)
    p.add_argument("--factor", type=int, default=2)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--batch_real", type=int, default=128)
    p.add_argument("--batch_syn_max", type=int, default=200)
    p.add_argument("--iter_calib", type=int, default=1)
    p.add_argument("--real_per_class", type=int, default=500, help="real images held per class")
    p.add_argument("--iters", type=int, default=5, help="timed iterations per schedule (after 1 warm-up)")
    args = p.parse_args()
    device = select_device(args.device)
    torch.manual_seed(0)

    n = args.nclass * args.real_per_class
    images = torch.randint(0, 256, (n, args.channels, args.size, args.size), dtype=torch.uint8)
    split = Split(images, torch.arange(args.nclass).repeat_interleave(args.real_per_class))
    sampler = ClassSampler(split, args.nclass, args.batch_real, device)
    network = {"net_type": "convnet", "config": model_config("convnet", args.nclass, args.channels, args.size,
                                                             args.depth, args.width)}
    folder = tempfile.mkdtemp()
    for stage in ("init", "trained"):
        atomic_save(make_network(network, "cpu").state_dict(), expert_path(folder, 0, stage))
    bank = DANCE.ExpertBank(folder, 1, network, device, "")
    dsa = DiffAug("color_crop_cutout", batch=True)
    mean, std = (0.5,) * args.channels, (0.25,) * args.channels

    def aug(x, groups=None):
        return dsa(normalize(x, mean, std), groups)

    schedules = {"per_class": DANCE.per_class_update, "joint": DANCE.joint_update}
    state = {}
    for name in schedules:
        synset = SyntheticSet(args.nclass, args.ipc, args.channels, args.size, args.factor, "single", device)
        state[name] = (synset, torch.optim.SGD([synset.data], lr=0.1, momentum=0.5))
    ns = argparse.Namespace(batch_syn_max=args.batch_syn_max, iter_calib=args.iter_calib)
    times = {name: [] for name in schedules}
    for i in range(args.iters + 1):
        for name, update in schedules.items():  # alternate, so both see the same machine state
            synset, optimizer = state[name]
            synchronize(device)
            start = time.perf_counter()
            update(synset, sampler, bank.middle(0, 0.5), bank.expert(0), aug, optimizer, ns)
            synchronize(device)
            if i > 0:
                times[name].append(time.perf_counter() - start)

    print(f"device {device} ({torch.get_num_threads()} threads), torch {torch.__version__}; "
          f"{args.nclass} classes, ipc {args.ipc}, factor {args.factor}, ConvNet-{args.depth} width {args.width:g}, "
          f"batch_real {args.batch_real}, iter_calib {args.iter_calib}; median of {args.iters} iterations")
    for name, t in times.items():
        print(f"  {name:9s}: {statistics.median(t):.3f} s/iter  (min {min(t):.3f}, max {max(t):.3f})")
    ratio = statistics.median(times["per_class"]) / statistics.median(times["joint"])
    print(f"  joint is {ratio:.2f}x faster than per_class")


if __name__ == "__main__":
    main()
