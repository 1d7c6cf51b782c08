"""DD-Ranking's scores of a condensed set: IOR, HLR and LRS.

Li et al. 2025, "DD-Ranking: Rethinking the Evaluation of Dataset Distillation", arXiv 2505.13300. With run r of
each term trained under the same protocol, network and run index:

    IOR_r = Acc(set)_r - Acc(random)_r        improvement over random: a random real subset of ipc images per class
                                              (the set's number of stored images, whatever its factor), redrawn
                                              for every run
    HLR_r = Acc(full) - Acc(set, hard)_r      hard-label recovery: what the whole training set still adds
    LRS_r = (e^a_r - e^-1) / (e - e^-1),  a_r = lambda * IOR_r - (1 - lambda) * HLR_r,  lambda = 0.5

Accuracies are fractions in [0, 1], as in the paper, so a lies in [-1, 1] and LRS in [0, 1] (DD-Ranking's code
feeds percentages into the exponential; README, "DD-Ranking scores"). Each score is reported as the mean and the
population standard deviation (numpy's default, DD-Ranking's np.std) of its per-run values; LRS is computed per
run, then averaged, as DD-Ranking does. Acc(full) is one number, the mean over its runs, computed once per dataset,
network and protocol and reused (DD-Ranking's cache of full-data accuracies), so std(HLR) is the spread of the
set's own hard-label accuracy.

With soft labels (DD-Ranking's soft-label evaluator), IOR compares the set and the random subsets both trained
on the teacher's soft labels, while HLR stays a hard-label score: the set and the whole training set trained on
their labels.
"""
import math
import statistics

import torch

from data.sampler import gather

LRS_LAMBDA = 0.5


def label_robust_score(ior, hlr, lam=LRS_LAMBDA):
    """LRS of one run from IOR and HLR (fractions): (e^a - e^-1) / (e - e^-1), a = lam * IOR - (1 - lam) * HLR."""
    a = lam * ior - (1 - lam) * hlr
    return (math.exp(a) - math.exp(-1)) / (math.exp(1) - math.exp(-1))


def _spread(values):
    return {"mean": statistics.mean(values), "std": statistics.pstdev(values), "runs": list(values)}


def dd_ranking_scores(syn, random, syn_hard, full, lam=LRS_LAMBDA):
    """IOR, HLR and LRS from per-run test accuracies in percent (as training.set_accuracy.evaluate_set reports them).

    syn[r], random[r]: run r on the set and on run r's random subset (one label mode); syn_hard[r]: run r on the set
    with hard labels; full: the whole training set's accuracy (one number). Each score: mean, std and per-run values,
    as fractions; "acc" holds the mean accuracies as fractions.
    """
    if not (len(syn) == len(random) == len(syn_hard)) or not syn:
        raise ValueError(f"need as many runs of each term (got {len(syn)}, {len(random)}, {len(syn_hard)})")
    syn, random, syn_hard = [[a / 100 for a in accs] for accs in (syn, random, syn_hard)]
    full = full / 100
    ior = [s - r for s, r in zip(syn, random)]
    hlr = [full - s for s in syn_hard]
    lrs = [label_robust_score(i, h, lam) for i, h in zip(ior, hlr)]
    return {"ior": _spread(ior), "hlr": _spread(hlr), "lrs": _spread(lrs), "lambda": lam,
            "acc": {"set": statistics.mean(syn), "random": statistics.mean(random),
                    "set_hard": statistics.mean(syn_hard), "full": full}}


def random_subsets(train, nclass, ipc, seed, device):
    """run -> (images, labels): ipc random real images of each class, class-major, drawn for run r from a stream of
    its own (seed * 1000 + r, like run r's network), so a run's subset depends on neither the other runs nor
    what ran before."""
    labels = train.labels.cpu()
    per_class = [torch.nonzero(labels == c).flatten() for c in range(nclass)]

    def draw(run):
        generator = torch.Generator().manual_seed(seed * 1000 + run)
        index = torch.cat([idx[torch.randperm(len(idx), generator=generator)[:ipc]] for idx in per_class])
        return gather(train.images, index, device), torch.arange(nclass, device=device).repeat_interleave(ipc)

    return draw


def score_line(score):
    """The three scores, mean +- std over runs, and the accuracies behind them (fractions), on one line."""
    acc = score["acc"]
    hard = f", set with hard labels {acc['set_hard']:.4f}" if acc["set_hard"] != acc["set"] else ""
    return (f"DD-Ranking: IOR {score['ior']['mean']:+.4f} +- {score['ior']['std']:.4f}  HLR {score['hlr']['mean']:+.4f}"
            f" +- {score['hlr']['std']:.4f}  LRS {score['lrs']['mean']:.4f} +- {score['lrs']['std']:.4f}  "
            f"(fractions; accuracy of the set {acc['set']:.4f}, random subsets {acc['random']:.4f}{hard}, whole "
            f"training set {acc['full']:.4f})")


def score_table(entries):
    """Markdown table of the evaluations that carry DD-Ranking scores ("" when none does)."""
    scored = [e for e in entries if "score" in e]
    if not scored:
        return ""
    lines = ["| set | dataset | ipc | network | labels | runs | acc set | acc random | acc full | IOR | HLR | LRS |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for e in scored:
        lines.append(f"| {e['set']} | {e['dataset']} | {e['ipc']} | {e['network']} | {e.get('labels', 'hard')} | "
                     f"{score_cells(e['score'])} |")
    return "\n".join(lines)


def score_cells(score):
    """A record's scores as markdown cells: runs | acc set | acc random | acc full | IOR | HLR | LRS."""
    acc = score["acc"]
    return (f"{len(score['ior']['runs'])} | {acc['set']:.4f} | {acc['random']:.4f} | {acc['full']:.4f} | "
            f"{score['ior']['mean']:+.4f} +- {score['ior']['std']:.4f} | "
            f"{score['hlr']['mean']:+.4f} +- {score['hlr']['std']:.4f} | "
            f"{score['lrs']['mean']:.4f} +- {score['lrs']['std']:.4f}")
