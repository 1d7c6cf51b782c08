"""The paper's Figure 3 (b) and (c) at small scale, on the embedded digits.

(b) test accuracy of the middle encoder lam * init + (1 - lam) * trained for lam = 0, 0.1, ..., 1,
    averaged over the experts;
(c) the trained expert's accuracy on the synthetic set while it is condensed by DM (fresh random
    networks, no calibration) and by DANCE.

    python bench/figure3.py                   # about 5 minutes on 2 CPU cores
Writes <out>/fig3b_middle_encoder.png, <out>/fig3c_expert_on_synthetic.png and <out>/figure3.json.
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


def plot(out, lams, middle, curves):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    ax.plot(lams, middle, "o-")
    ax.set(xlabel="lambda (0 = trained expert, 1 = its initialisation)", ylabel="test accuracy (%)",
           title="(b) middle encoders on digits")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "fig3b_middle_encoder.png"), dpi=120)
    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    for name, curve in curves.items():
        ax.plot(*zip(*curve), label=name)
    ax.set(xlabel="condensation iteration", ylabel="expert accuracy on synthetic set (%)",
           title="(c) trained expert on the synthetic set")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "fig3c_expert_on_synthetic.png"), dpi=120)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ipc", type=int, default=10)
    p.add_argument("--niter", type=int, default=200)
    p.add_argument("--every", type=int, default=10, help="iterations between expert checks")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=os.path.join("results", "bench", "figure3"))
    q = p.parse_args()
    device = select_device(q.device)
    common = ["-d", "digits", "--device", q.device, "--seed", str(q.seed),
              "--pretrain_dir", os.path.join(q.out, "experts")]
    args = parse("pretrain", common)
    pretrain.main(args)
    train, test, info = load_dataset("digits", args.data_dir)
    test = Split(test.images.to(device), test.labels)
    bank = ExpertBank(args.pretrain_dir, args.pretrain_amount, network_of(args, info), device, "")
    lams = [round(0.1 * i, 1) for i in range(11)]
    middle = middle_encoder_curve(bank, test, info, device, lams)

    condense = common + ["--ipc", str(q.ipc), "--niter", str(q.niter), "--eval_every", "0"]
    curves = {
        "DM": condense_tracking(condense + ["--num_premodel", "0", "--iter_calib", "0",
                                           "--save_dir", os.path.join(q.out, "dm")], bank.expert(0), info, q.every),
        "DANCE": condense_tracking(condense + ["--save_dir", os.path.join(q.out, "dance")], bank.expert(0), info,
                                   q.every),
    }
    plot(q.out, lams, middle, curves)
    atomic_write_json({"lams": lams, "middle_encoder_acc": middle, "expert_acc_on_synthetic": curves,
                       "ipc": q.ipc, "seed": q.seed}, os.path.join(q.out, "figure3.json"))
    print("(b) middle encoder test accuracy by lam: " + ", ".join(f"{lam}: {a:.1f}" for lam, a in zip(lams, middle)))
    for name, curve in curves.items():
        print(f"(c) expert accuracy on the {name} set: start {curve[0][1]:.1f}, end {curve[-1][1]:.1f}, "
              f"min {min(a for _, a in curve):.1f}")
    print(f"written: {q.out}/fig3b_middle_encoder.png, fig3c_expert_on_synthetic.png, figure3.json")


if __name__ == "__main__":
    main()
