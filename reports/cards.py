"""What the Hugging Face Hub and the `datasets` ImageFolder loader read beside our files, as text.

    metadata.csv   in an exported set's images/ folder: file_name (relative to that folder), label (the class index),
                   class_name; with it `datasets` takes every label from this file, never from folder names
    README.md      the dataset card of an exported set, or the model card of an expert folder: a YAML header the
                   Hub reads, what the files are, how they were made and measured, and the hub CLI's upload command

Nothing here imports `datasets` or reaches the Hub (pushing is left to the hub's own CLI); the only file read is an
earlier card, whose filled-in license a rewritten card keeps.
"""
import csv
import io
import json
import os
import re
import shlex
from dataclasses import dataclass, field, replace
from typing import Optional

from reports.dd_ranking import score_cells

# The Hub's size_categories values, by the first count they no longer cover
SIZE_CATEGORIES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                   (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B"))
LICENSE_LINE = ("license:  # fill in before pushing (the Hub's license id, e.g. mit); the license of the data these "
                "images come from applies too")
# A folder name `datasets` would take for a split (its SPLIT_KEYWORDS, cut at -._ digits and spaces)
SPLIT_WORDS = {"train", "training", "validation", "valid", "dev", "val", "test", "testing", "eval", "evaluation"}
EXPERTS_TAGS = ["dance", "dataset-condensation", "dataset-distillation", "image-classification"]


def license_line(folder):
    """The header's license line: the one of the card already in `folder` when someone filled it in, else empty with
    a comment saying to fill it."""
    try:
        with open(os.path.join(folder, "README.md")) as f:
            old = f.read().split("---\n")
    except (OSError, UnicodeDecodeError):
        return LICENSE_LINE
    header = old[1].splitlines() if len(old) > 2 and old[0] == "" else []
    filled = [line for line in header if re.fullmatch(r"license: *[^#\s].*", line)]
    return filled[0] if filled else LICENSE_LINE


def size_category(count):
    """The Hub's size_categories value for `count` examples."""
    return next((name for limit, name in SIZE_CATEGORIES if count < limit), "1B<n<10B")


def quoted(value):
    """A YAML scalar for any string (a JSON string is a valid YAML double-quoted scalar)."""
    return json.dumps(str(value))


def metadata_csv(rows):
    """metadata.csv from (file_name, label, class_name) rows, file names relative to the images folder."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["file_name", "label", "class_name"])
    writer.writerows((name, int(label), str(cls)) for name, label, cls in rows)
    return out.getvalue()


def cell(text):
    """Text for a Markdown table cell (a '|' in a class name would end the cell)."""
    return str(text).replace("|", "\\|")


def split_like(folders):
    """The class folders `datasets` would read as a split (train, test, ...) when it infers splits from names."""
    return [f for f in folders if SPLIT_WORDS & set(re.split(r"[-._ 0-9]+", f.lower()))]


def upload_commands(repo, folder, kind):
    """The hub CLI's upload command of `folder` as a `kind` repo (model or dataset), in a code block."""
    args = f"{repo} {shlex.quote(folder)} --repo-type {kind}"
    return ["```bash", f"hf upload {args}", f"# huggingface_hub before 1.0 names the same command: huggingface-cli "
                                           f"upload {args}", "```"]


@dataclass
class SetAbout:
    """What a dataset card says of one exported set, beyond its files (evaluate.py gathers it).

    method: 'DANCE', 'DM', 'real images (herding)', ... or None when unknown; origin: run_origin of its description
    ({} without one); settings: the description's settings (None without one); records: the evaluation records of
    the set found in `results`; evaluate_hint: how to get one when there is none; name: the export folder's name
    (dataset_card sets it).
    """
    source: str
    dataset: str
    class_names: list
    ipc: int
    factor: int
    decode_type: str
    method: Optional[str]
    origin: dict = field(default_factory=dict)
    settings: Optional[dict] = None
    records: list = field(default_factory=list)
    results: str = ""
    evaluate_hint: str = ""
    soft_labels: bool = False
    name: str = ""


def dataset_header(about, count, license_entry):
    """The dataset card's YAML header: what the Hub indexes, and the files that make its train split."""
    tags = ["dataset-condensation", "dataset-distillation", "synthetic"] + (
        [about.method.split()[0].lower()] if about.method and about.method.split()[0] in ("DANCE", "DM") else [])
    return ["---", f"pretty_name: {quoted(pretty_name(about))}", license_entry, "task_categories:",
            "- image-classification", "size_categories:", f"- {size_category(count)}", "tags:",
            *[f"- {t}" for t in tags],
            # only the PNG tree is the dataset; tensors.pt beside it is for DD-Ranking
            "configs:", "- config_name: default", "  data_files:", "  - split: train", "    path: images/**", "---"]


def pretty_name(about):
    """The card's title: method, dataset, ipc and factor."""
    factor = f", factor {about.factor}" if about.factor > 1 else ""
    return f"{about.method or 'Condensed set'} {about.dataset} IPC {about.ipc}{factor} ({about.name})"


def facts_table(about, written):
    """The set at a glance: method, data, images and how the stored ones decode."""
    per = about.ipc * about.factor ** 2
    rows = [("method", about.method or "unknown: the set has no description (data_K.json) beside it"),
            ("dataset", f"{about.dataset}, {len(about.class_names)} classes"),
            ("images per class (IPC)", f"{about.ipc} stored"),
            ("factor", f"{about.factor}: each stored image decodes into {about.factor ** 2} ({about.decode_type}), "
                       f"{per} training images per class" if about.factor > 1 else "1 (each stored image is one "
                                                                                   "training image)"),
            ("images", f"{written['images']}"),
            ("source", f"`{os.path.basename(about.source)}`")]
    if about.origin:
        rows.append(("condensation", f"iteration {about.origin['method'].get('iteration')}, seed "
                                     f"{about.origin.get('condense_seed')}"))
    return ["| | |", "|---|---|", *[f"| {k} | {v} |" for k, v in rows]]


def accuracy_lines(record):
    """One evaluation record as a sentence: accuracy, runs, network, labels and the protocol it was trained with."""
    protocol = record.get("protocol") or {}
    width = (record.get("network_config") or {}).get("config", {}).get("width")
    network = record["network"] + (f" (width {width:g})" if isinstance(width, (int, float)) else "")
    labels = "the teacher's soft labels" if record.get("labels") == "soft" else "the set's hard labels"
    return [f"- **{record['mean']:.2f} +- {record['std']:.2f} %** final-epoch test accuracy, mean +- std over "
            f"{len(record['final'])} runs of a fresh {network} trained {protocol.get('epochs', '?')} epochs on these "
            f"images with {labels} (evaluate.py, {record.get('time', 'time not recorded')}, git "
            f"{record.get('git', '?')}); the official code's figure, the best of its periodic test checks: "
            f"{record['best_mean']:.2f} %.",
            f"  Protocol: `{json.dumps(protocol, sort_keys=True)}`"]


def accuracy_section(about):
    """The measured accuracy of the set, or how to measure it."""
    lines = ["## Accuracy", ""]
    if not about.records:
        return lines + [f"Not evaluated yet: `{about.results}` holds no evaluation of this set with this export's "
                        f"evaluation settings. To measure it, {about.evaluate_hint}, then export it again to fill in "
                        f"this section."]
    for record in about.records:
        lines += accuracy_lines(record)
    return lines + ["", "The protocol is this repository's fixed one (README, 'Evaluation protocol'): no choice is "
                        "made on the test split."]


def score_section(about):
    """DD-Ranking's scores of the records that carry them."""
    scored = [r for r in about.records if "score" in r]
    lines = ["## DD-Ranking scores", ""]
    if not scored:
        return lines + ["Not computed: evaluate the set with `--score` (README, 'DD-Ranking scores') and export it "
                        "again."]
    lines += ["| network | labels | runs | acc set | acc random subset | acc whole training set | IOR | HLR | LRS |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in scored:
        lines.append(f"| {r['network']} | {r.get('labels', 'hard')} | {score_cells(r['score'])} |")
    return lines + ["", "Fractions, mean +- std over runs, with this repository's protocol for all three terms: they "
                        "compare sets evaluated here, not with DD-Ranking's leaderboard."]


def settings_section(about):
    """The run's settings as its description records them (local paths left out), or why there are none."""
    lines = ["## How it was made", ""]
    if about.origin:
        settings = {k: v for k, v in (about.settings or {}).items() if k != "data_dir"}  # a path on our machine
        described = {"settings": settings, "method": about.origin["method"], "seed": about.origin["condense_seed"]}
        return lines + ["The set's description (data_K.json) records the run's settings and method:", "",
                        "```json", json.dumps(described, indent=2, sort_keys=True, default=str), "```"]
    if about.method and about.method.startswith("real images"):
        return lines + ["Real training images, picked without condensation: the baseline condensed sets are "
                        "compared with."]
    return lines + ["Unknown: the set has no description (data_K.json) beside it, e.g. a set of the official code."]


def files_section(about, written):
    """The files of the export and how to load them."""
    names = ", ".join(quoted(n) for n in about.class_names)
    split = split_like(written["class_folders"])
    load = ('load_dataset("imagefolder", data_files={"train": "images/**"}, split="train")' if split else
            'load_dataset("imagefolder", data_dir="images", split="train")')
    lines = ["## Files and loading", "",
             "- `images/<class>/NNNNN.png`: the decoded training images, one folder per class (torchvision's "
             "`ImageFolder` reads the labels below from the folders' sorted order)",
             "- `images/metadata.csv`: `file_name`, `label` (the class index), `class_name` of every image; with it "
             "`datasets` reads each label from this file, not from the folder names",
             "- `tensors.pt` (`torch.load(path, weights_only=True)`): `image_tensor` (normalised with the dataset's "
             "mean and std) and `hard_labels`, the input of DD-Ranking's `compute_metrics`; `images` ([0, 1] "
             "pixels), `class_names`, `mean`, `std`" + (", and the teacher's logits `soft_labels`"
                                                         if about.soft_labels else ""),
             "", "```python", "from datasets import ClassLabel, load_dataset", "",
             f"train = {load}  # from the Hub: load_dataset(\"<user>/{about.name}\", split=\"train\")",
             "# metadata.csv gives integer labels; name them:",
             f'train = train.cast_column("label", ClassLabel(names=[{names}]))', "```"]
    if split:
        lines += ["", f"The class folder(s) {', '.join(split)} look like split names to `datasets`, so name the "
                      f"split's files (`data_files`) rather than passing `data_dir`."]
    return lines


def classes_section(about, written):
    """Class index, folder and name."""
    return ["## Classes", "", "| label | folder | name |", "|---|---|---|",
            *[f"| {i} | {cell(folder)} | {cell(name)} |"
              for i, (folder, name) in enumerate(zip(written["class_folders"], about.class_names))]]


def dataset_card(about, folder, written):
    """The dataset card (README.md) of the set exported to `folder` (keeping the license an earlier export's card
    there was given); `written` is its export.json entry."""
    about = replace(about, name=os.path.basename(os.path.normpath(folder)))
    sections = [facts_table(about, written), accuracy_section(about), score_section(about), settings_section(about),
                files_section(about, written), classes_section(about, written),
                ["## Pushing it to the Hub", "", "From the folder `evaluate.py --export` ran in, after `hf auth "
                                                 "login`, into a dataset repository of yours:", "",
                 *upload_commands(f"<user>/{about.name}", folder, "dataset")]]
    lines = dataset_header(about, written["images"], license_line(folder)) + ["", f"# {pretty_name(about)}", "",
                                                        f"A condensed training set of {about.dataset} written by "
                                                        f"DANCE's `evaluate.py --export`: train a network from "
                                                        f"scratch on these {written['images']} images instead of "
                                                        f"the whole training set."]
    for section in sections:
        lines += [""] + section
    return "\n".join(lines) + "\n"


def expert_rows(manifest):
    """The experts' accuracy table, in index order, and their mean accuracy (None when none is recorded)."""
    experts = sorted(manifest.get("experts", {}).items(), key=lambda item: int(item[0]))
    rows = [f"| {i} | {e['test_acc']:.2f} | {', '.join(map(str, e.get('trained_with', [i])))} | "
            f"{e.get('seconds', '-')} |" for i, e in experts]
    accs = [e["test_acc"] for _, e in experts]
    return rows, (sum(accs) / len(accs) if accs else None)


def network_label(network):
    """A network description as a person reads it (convnet-3, width 0.25, instance norm)."""
    config = network.get("config", {})
    parts = [f"{network.get('net_type')}" + (f"-{config['depth']}" if "depth" in config else "")]
    parts += [f"width {config['width']:g}"] if "width" in config else []
    parts += [f"{config['norm_type']} norm"] if "norm_type" in config else []
    return ", ".join(parts)


def model_header(manifest, license_entry):
    """The model card's YAML header."""
    dataset_tag = re.sub(r"[^\w-]+", "-", str(manifest["dataset"]))
    tags = EXPERTS_TAGS + [dataset_tag, manifest["network"].get("net_type", "network")]
    return ["---", "library_name: pytorch", license_entry, "tags:", *[f"- {t}" for t in tags], "---"]


def experts_summary(manifest, holdout):
    """What the experts are: data, network, recipe, and each one's test accuracy."""
    dataset, network = manifest["dataset"], manifest["network"]
    rows, mean = expert_rows(manifest)
    return [f"# DANCE experts: {dataset}, {network_label(network)}", "",
            f"{len(rows)} expert network(s) trained by DANCE's `pretrain.py` on {dataset} ({holdout}), "
            f"{manifest.get('epochs')} epoch(s) each; expert i starts from seed {manifest.get('seed')} x 1000 + i.",
            "", "| | |", "|---|---|", f"| dataset | {dataset} |", f"| network | {network_label(network)} |",
            f"| network constructor | `{json.dumps(network, sort_keys=True)}` |",
            f"| recipe | `{json.dumps(manifest.get('recipe'), sort_keys=True)}` |",
            f"| mean test accuracy | {'-' if mean is None else f'{mean:.2f} %'} |", "",
            "## Test accuracy of each expert", "", "| expert | test acc (%) | trained together | seconds |",
            "|---|---|---|---|", *rows]


def experts_usage(folder, name, dance_command):
    """The folder's files and how DANCE.py uses them, with the commands that fetch and use it."""
    return ["## Files", "",
            "- `premodel{i}_init.pth.tar`, `premodel{i}_trained.pth.tar`: expert i's state_dict before and after "
            "training (the official code's file names and keys)",
            "- `manifest.json`: the network, data, seed, epochs, held-out split, recipe and each expert's test "
            "accuracy; DANCE.py checks a run's network and split against it",
            "- `args.json`, `log.txt`: pretrain.py's settings and log (local paths included; `--exclude` them when "
            "uploading to leave them out)", "",
            "## Using them with DANCE.py", "",
            "Each iteration DANCE.py picks an expert k and lam ~ U(`--lam_min`, `--lam_max`), aligns the set in the "
            "middle encoder lam * init_k + (1 - lam) * trained_k and calibrates it with the trained expert k (the "
            "first `--num_premodel` experts). Download this repository where the command below looks for it and "
            "run DANCE.py with the same data and network flags:", "", "```bash",
            f"hf download <user>/{name} --repo-type model --local-dir {shlex.quote(folder)}", dance_command, "```"]


def model_card(folder, manifest, holdout, dance_command):
    """The model card (README.md) of the expert folder `folder` from its manifest (keeping the license its earlier
    card was given); `holdout` says which training images the experts saw, `dance_command` is the DANCE.py command
    that uses them."""
    name = os.path.basename(os.path.normpath(folder))
    lines = [*model_header(manifest, license_line(folder)), "", *experts_summary(manifest, holdout), "",
             *experts_usage(folder, name, dance_command), "",
             "## Pushing it to the Hub", "", "From the folder `pretrain.py` ran in, after `hf auth login`:", "",
             *upload_commands(f"<user>/{name}", folder, "model")]
    return "\n".join(lines) + "\n"
