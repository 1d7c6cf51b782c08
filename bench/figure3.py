"""The paper's Figure 3 (b) and (c) at small scale, on the embedded digits or on real CIFAR-10.

(b) test accuracy of the middle encoder lam * init + (1 - lam) * trained for lam = 0, 0.1, ..., 1,
    averaged over the experts;
(c) the trained expert's accuracy on the synthetic set while it is condensed by DM (fresh random
    networks, no calibration) and by DANCE.

    python bench/figure3.py                                        # digits, about 7 minutes on 2 CPU cores
    python bench/figure3.py -d cifar10 --data_dir DATA --out docs  # bench/methods.py's CIFAR-10 budget and experts
Writes <out>/fig3b_middle_encoder.png, <out>/fig3c_expert_on_synthetic.png and <out>/figure3.json (on cifar10 each
name ends in _cifar10); the condensation runs go to results/bench/figure3_<dataset>/.
"""
import argparse
import os
import shutil
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import DANCE  # noqa: E402
import pretrain  # noqa: E402
from arguments import parse  # noqa: E402
from bench.methods import BUDGETS, budget_flags, location_flags  # noqa: E402
from arguments.values import network_of  # noqa: E402
from condense.encoders import ExpertBank  # noqa: E402
from data.augment import normalize  # noqa: E402
from data.datasets import Split, load_dataset  # noqa: E402
from training.recipe import test_accuracy  # noqa: E402
from utils import atomic_write_json, select_device  # noqa: E402


def middle_encoder_curve(bank, test, info, device, lams):
    """Mean (over experts) test accuracy of the middle encoder at each lam."""
    return [sum(test_accuracy(bank.middle(k, lam), test, info.mean, info.std, device) for k in range(len(bank)))
            / len(bank) for lam in lams]


@torch.no_grad()
def expert_accuracy(expert, synset, info):
    """Accuracy (%) of the trained expert on the decoded synthetic set."""
    images, labels = synset.decoded()
    logits = expert(normalize(images, info.mean, info.std))
    return 100.0 * (logits.argmax(1).cpu() == labels).float().mean().item()


def condense_tracking(argv, expert, info, every):
    """Run DANCE.py with argv; record the expert's accuracy on the set every `every` iterations."""
    curve = []

    def track(k, synset, encoders):
        if (k - 1) % every == 0 or k == args.niter:
            curve.append((k, expert_accuracy(expert, synset, info)))

    args = parse("condense", argv)
    shutil.rmtree(args.save_dir, ignore_errors=True)  # the figure's own run folder, redone each time
    DANCE.main(args, on_iteration=track)
    return curve


def plot(out, suffix, title, lams, middle, curves):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    ax.plot(lams, middle, "o-")
    ax.set(xlabel="lambda (0 = trained expert, 1 = its initialisation)", ylabel="test accuracy (%)",
           title=f"(b) middle encoders on {title}")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(out, f"fig3b_middle_encoder{suffix}.png"), dpi=120)
    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    for name, curve in curves.items():
        ax.plot(*zip(*curve), label=name)
    ax.set(xlabel="condensation iteration", ylabel="expert accuracy on synthetic set (%)",
           title=f"(c) trained expert on {title}'s synthetic sets")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(out, f"fig3c_expert_on_synthetic{suffix}.png"), dpi=120)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-d", "--dataset", default="digits", choices=("digits", *BUDGETS))
    p.add_argument("--data_dir", default=None, help="cifar10: the folder holding cifar-10-batches-py")
    p.add_argument("--ipc", type=int, default=10)
    p.add_argument("--niter", type=int, default=None, help="default: the dataset's (digits 200, cifar10 300)")
    p.add_argument("--every", type=int, default=10, help="iterations between expert checks")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=os.path.join("results", "bench", "figure3"), help="the pictures and the json")
    p.add_argument("--pretrain_dir", default=None,
                   help="experts; default <out>/experts on digits, bench/methods.py's (results/bench/cifar10/experts) "
                        "on cifar10, trained there if missing")
    q = p.parse_args()
    if q.dataset in BUDGETS and not q.data_dir:
        p.error(f"-d {q.dataset} reads real images: pass --data_dir (the folder with cifar-10-batches-py)")
    suffix = "" if q.dataset == "digits" else f"_{q.dataset}"
    experts = q.pretrain_dir or (os.path.join(q.out, "experts") if q.dataset == "digits" else
                                 os.path.join("results", "bench", q.dataset, "experts"))
    runs = q.out if q.dataset == "digits" else os.path.join("results", "bench", f"figure3_{q.dataset}")
    device = select_device(q.device)
    where = location_flags(q.dataset, q.device, q.data_dir)
    args = parse("pretrain", where + budget_flags(q.dataset, "pretrain") + ["--seed", "0", "--pretrain_dir", experts])
    pretrain.main(args)
    train, test, info = load_dataset(q.dataset, args.data_dir)
    test = Split(test.images.to(device), test.labels)
    bank = ExpertBank(args.pretrain_dir, args.pretrain_amount, network_of(args, info), device, "")
    lams = [round(0.1 * i, 1) for i in range(11)]
    middle = middle_encoder_curve(bank, test, info, device, lams)

    method = budget_flags(q.dataset, "condense") + ["--seed", str(q.seed), "--ipc", str(q.ipc), "--eval_every", "0",
                                                    "--num_premodel", str(args.pretrain_amount)]
    method += ["--niter", str(q.niter)] if q.niter else []
    condense = where + method + ["--pretrain_dir", experts]
    curves = {
        "DM": condense_tracking(condense + ["--num_premodel", "0", "--iter_calib", "0",
                                           "--save_dir", os.path.join(runs, "dm")], bank.expert(0), info, q.every),
        "DANCE": condense_tracking(condense + ["--save_dir", os.path.join(runs, "dance")], bank.expert(0), info,
                                   q.every),
    }
    title = {"digits": "digits", "cifar10": "CIFAR-10"}.get(q.dataset, q.dataset)
    plot(q.out, suffix, title, lams, middle, curves)
    os.makedirs(q.out, exist_ok=True)
    atomic_write_json({"dataset": q.dataset, "lams": lams, "middle_encoder_acc": middle,
                       "expert_acc_on_synthetic": curves, "ipc": q.ipc, "seed": q.seed,
                       "condense_flags": ["-d", q.dataset] + method}, os.path.join(q.out, f"figure3{suffix}.json"))
    print("(b) middle encoder test accuracy by lam: " + ", ".join(f"{lam}: {a:.1f}" for lam, a in zip(lams, middle)))
    for name, curve in curves.items():
        print(f"(c) expert accuracy on the {name} set: start {curve[0][1]:.1f}, end {curve[-1][1]:.1f}, "
              f"min {min(a for _, a in curve):.1f}")
    print(f"written: {q.out}/fig3b_middle_encoder{suffix}.png, fig3c_expert_on_synthetic{suffix}.png, "
          f"figure3{suffix}.json")


if __name__ == "__main__":
    main()
