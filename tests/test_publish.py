"""Publishing: an export's metadata.csv and dataset card, and the expert folder's model card, as the Hugging Face
`datasets` loader and the Hub read them (requirements-extras.txt installs `datasets` and PyYAML for these checks)."""
import csv
import json
import os
import sys
import types

import numpy as np
import pytest
import torch

import DANCE
import evaluate
import pretrain
from arguments import parse
from data.synthetic import SyntheticSet
from reports.cards import SetAbout, files_section, size_category, split_like
from reports.dd_ranking import dd_ranking_scores
from reports.export import export_set
from reports.records import read_lines, record_evaluation
from tests.fixtures import CIFAR10_NAMES, write_fixture

NO_DATASETS = "the Hugging Face `datasets` library is not installed (pip install -r requirements-extras.txt)"


def hf_load(tmp_path):
    """`datasets.load_dataset`, caching under tmp_path, and the module (the test is skipped without it)."""
    datasets = pytest.importorskip("datasets", reason=NO_DATASETS)
    return lambda *a, **k: datasets.load_dataset(*a, cache_dir=str(tmp_path / "hf_cache"), **k), datasets


def simple_yaml(text):
    """The top level of a card header without PyYAML: `key: scalar` (a trailing comment dropped, a quoted one
    unquoted) and `key:` followed by `- item` lines; nested entries stay raw strings."""
    out, key = {}, None
    for line in text.splitlines():
        if line.startswith("- "):
            out[key] = (out[key] or []) + [line[2:]]
        elif line and not line.startswith(" "):
            key, _, value = line.partition(":")
            value = value.split(" #")[0].strip()
            out[key] = json.loads(value) if value.startswith('"') else value or None
    return out


def front_matter(text):
    """The YAML header of a card, parsed (by PyYAML when installed)."""
    assert text.startswith("---\n") and text.count("---\n") >= 2
    header = text.split("---\n")[1]
    try:
        import yaml
    except ImportError:
        return simple_yaml(header)
    return yaml.safe_load(header)


def tiny_export(folder, class_names, per_class=2):
    """A hand-built set of per_class images of each class, exported to folder/s (no `datasets` import allowed)."""
    info = types.SimpleNamespace(class_names=tuple(class_names), nclass=len(class_names), mean=(0.5,) * 3,
                                 std=(0.25,) * 3, name="tiny")
    labels = torch.arange(len(class_names)).repeat_interleave(per_class)
    images = torch.rand(len(labels), 3, 8, 8, generator=torch.Generator().manual_seed(0))
    export_set(str(folder), "s", images, labels, info)
    return os.path.join(str(folder), "s")


@pytest.fixture
def cifar(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data_dir = write_fixture("cifar10", str(tmp_path / "data"))
    SyntheticSet(10, 2, 3, 32).save(str(tmp_path / "run" / "data_5.pt"))
    return ["-d", "cifar10", "--data_dir", data_dir, "--width", "0.0625", "--device", "cpu", "--data",
            str(tmp_path / "run" / "data_5.pt")]


@pytest.fixture(scope="module")
def described(tmp_path_factory):
    """One expert, a 2-iteration DANCE run at ipc 1 (its set describes itself), evaluated with 2 runs of 1 epoch."""
    base = tmp_path_factory.mktemp("publish")
    data_dir = write_fixture("folder", str(base / "data"))
    common = ["-d", "folder", "--size", "16", "--data_dir", data_dir, "--pretrain_dir", str(base / "experts"),
              "--width", "0.0625", "--device", "cpu"]
    pretrain.main(parse("pretrain", common + ["--pretrain_amount", "1", "--pretrain_epochs", "1",
                                              "--batch_real", "16"]))
    DANCE.main(parse("condense", common + ["--ipc", "1", "--niter", "2", "--eval_every", "0", "--num_premodel", "1",
                                           "--batch_real", "4", "--eval_interval", "1", "--batch_size", "16",
                                           "--eval_epochs", "1", "--save_dir", str(base / "run")]))
    data, results = str(base / "run" / "data_2.pt"), str(base / "evaluations.jsonl")
    entry, = evaluate.main(parse("evaluate", ["--data", data, "--runs", "2", "--device", "cpu", "--results",
                                              results]))
    return {"base": base, "common": common, "data": data, "results": results, "entry": entry, "data_dir": data_dir}


def export_card(data, results, folder):
    """Export `data` with the records of `results`; the dataset card's text."""
    exported, = evaluate.main(parse("evaluate", ["--data", data, "--device", "cpu", "--results", results,
                                                 "--export", str(folder)]))
    with open(os.path.join(exported, "README.md")) as f:
        return f.read()


def test_metadata_csv_lists_every_image_with_its_class_index_and_name(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # the export itself must not import `datasets`
    folder = tiny_export(tmp_path / "out", ["b", "a, x"])  # sorted, the folder names would swap: index prefixes
    with open(os.path.join(folder, "images", "metadata.csv"), newline="") as f:
        rows = list(csv.reader(f))
    assert rows == [["file_name", "label", "class_name"], ["0_b/00000.png", "0", "b"], ["0_b/00001.png", "0", "b"],
                    ["1_a_x/00000.png", "1", "a, x"], ["1_a_x/00001.png", "1", "a, x"]]
    assert all(os.path.isfile(os.path.join(folder, "images", name)) for name, _, _ in rows[1:])
    assert not os.path.exists(os.path.join(folder, "README.md"))  # a card only where the caller gives one


def test_datasets_imagefolder_loads_the_export_with_our_labels(cifar, tmp_path):
    load, datasets = hf_load(tmp_path)
    folder, = evaluate.main(parse("evaluate", cifar + ["--export", str(tmp_path / "out")]))
    train = load("imagefolder", data_dir=os.path.join(folder, "images"), split="train")
    assert len(train) == 20 and train["label"] == [c for c in range(10) for _ in range(2)]
    assert train["class_name"] == [CIFAR10_NAMES[c] for c in train["label"]]
    pixels = torch.load(os.path.join(folder, "tensors.pt"), weights_only=True)["images"]
    assert np.array_equal(np.asarray(train[3]["image"]), pixels[3].mul(255).round().byte().permute(1, 2, 0).numpy())
    named = train.cast_column("label", datasets.ClassLabel(names=CIFAR10_NAMES))  # as the card shows
    assert named.features["label"].names == CIFAR10_NAMES and named[19]["label"] == 9
    # the folder as a Hub repository: the card's configs make images/ its train split
    repo = load(folder, split="train")
    assert len(repo) == 20 and repo["label"] == train["label"]


def test_a_class_folder_named_like_a_split_gets_the_loading_call_that_keeps_it(tmp_path):
    load, _ = hf_load(tmp_path)
    folder = tiny_export(tmp_path / "out", ["cat", "test"])
    assert split_like(["cat", "test"]) == ["test"] and split_like(["latest", "contest", "Test-2"]) == ["Test-2"]
    about = SetAbout(source="s.pt", dataset="tiny", class_names=["cat", "test"], ipc=2, factor=1,
                     decode_type="single", method=None)
    assert 'data_files={"train": "images/**"}' in "\n".join(files_section(about, {"class_folders": ["cat", "test"]}))
    train = load("imagefolder", data_files={"train": os.path.join(folder, "images", "**")},
                 split="train")  # data_dir would make 'test' a split of its own, without metadata
    assert train["label"] == [0, 0, 1, 1] and train["class_name"] == ["cat", "cat", "test", "test"]


def test_dataset_card_header_parses_and_an_unevaluated_set_says_so(cifar, tmp_path, capsys):
    folder, = evaluate.main(parse("evaluate", cifar + ["--export", str(tmp_path / "out")]))
    with open(os.path.join(folder, "README.md")) as f:
        card = f.read()
    assert "Not evaluated yet" in card and "without `--export`" in card and "IPC 2" in card
    assert "not evaluated yet" in capsys.readouterr().out
    assert card.rstrip().splitlines()[-2].startswith("# huggingface_hub before 1.0")
    assert f"hf upload <user>/run_data_5 {folder} --repo-type dataset" in card
    header = front_matter(card)
    assert header["task_categories"] == ["image-classification"] and header["size_categories"] == ["n<1K"]
    assert header["license"] is None and "fill in" in card.splitlines()[2]
    assert "IPC 2" in header["pretty_name"] and "  - split: train\n    path: images/**\n---" in card
    assert [size_category(n) for n in (999, 1000, 50_000, 1_281_167)] == ["n<1K", "1K<n<10K", "10K<n<100K",
                                                                          "1M<n<10M"]


def test_dataset_card_names_the_method_ipc_and_the_recorded_accuracy(described, tmp_path):
    entry = described["entry"]
    card = export_card(described["data"], described["results"], tmp_path / "out")
    assert "| method | DANCE |" in card and "| images per class (IPC) | 1 stored |" in card
    assert f"**{entry['mean']:.2f} +- {entry['std']:.2f} %**" in card and "over 2 runs" in card
    assert "Not evaluated" not in card and "DD-Ranking scores\n\nNot computed" in card
    assert '"num_premodel": 1' in card and os.path.abspath(described["data_dir"]) not in card  # no local path
    assert front_matter(card)["tags"][-1] == "dance"
    # a later record of the same evaluation with DD-Ranking's scores: the card shows them
    record = read_lines(described["results"])[-1]
    score = dd_ranking_scores(record["final"], [10.0, 20.0], record["final"], 90.0)
    record_evaluation(described["results"], {**record, "score": score})
    card_path = tmp_path / "out" / "run_data_2" / "README.md"
    card_path.write_text(card.replace(card.splitlines()[2], "license: cc-by-4.0"))  # filled in by hand
    card = export_card(described["data"], described["results"], tmp_path / "out")
    assert f"{score['lrs']['mean']:.4f} +- {score['lrs']['std']:.4f}" in card and "| 0.1500 |" in card
    assert front_matter(card)["license"] == "cc-by-4.0"  # a new export keeps it


def test_expert_card_lists_the_experts_accuracies_and_follows_the_manifest(described):
    folder = described["base"] / "experts"
    with open(folder / "manifest.json") as f:
        acc = json.load(f)["experts"]["0"]["test_acc"]
    card = (folder / "README.md").read_text()
    assert f"| 0 | {acc:.2f} |" in card and "--num_premodel 1" in card and f"--pretrain_dir {folder}" in card
    assert f"hf upload <user>/experts {folder} --repo-type model" in card
    header = front_matter(card)
    assert header["library_name"] == "pytorch" and header["license"] is None and "dance" in header["tags"]
    (folder / "README.md").unlink()  # a folder from before cards: a run with nothing to train writes it
    pretrain.main(parse("pretrain", described["common"] + ["--pretrain_amount", "1", "--pretrain_epochs", "1",
                                                           "--batch_real", "16"]))
    assert (folder / "README.md").read_text() == card
    (folder / "README.md").write_text(card.replace(card.splitlines()[2], "license: mit"))
    pretrain.main(parse("pretrain", described["common"] + ["--pretrain_amount", "2", "--pretrain_epochs", "1",
                                                           "--batch_real", "16"]))
    with open(folder / "manifest.json") as f:
        second = json.load(f)["experts"]["1"]["test_acc"]
    card = (folder / "README.md").read_text()
    assert f"| 0 | {acc:.2f} |" in card and f"| 1 | {second:.2f} |" in card and "--num_premodel 2" in card
    assert front_matter(card)["license"] == "mit"  # the manifest changed, the filled-in license stays
