"""evaluate.py --export: an ImageFolder tree that torchvision reads back, a tensor file in DD-Ranking's layout."""
import os

import numpy as np
import pytest
import torch
from torchvision.datasets import ImageFolder

import evaluate
import pretrain
from arguments import parse
from data.augment import normalize
from data.datasets import load_dataset
from data.synthetic import SyntheticSet
from reports.export import class_folders
from tests.fixtures import CIFAR10_NAMES, write_fixture
from utils import UserError


@pytest.fixture
def cifar(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data_dir = write_fixture("cifar10", str(tmp_path / "data"))
    SyntheticSet(10, 2, 3, 32).save(str(tmp_path / "run" / "data_5.pt"))
    return ["-d", "cifar10", "--data_dir", data_dir, "--width", "0.0625", "--device", "cpu"]


def test_export_reads_back_as_image_folder_and_tensors(cifar, tmp_path):
    out = tmp_path / "exported"
    folder, = evaluate.main(parse("evaluate", cifar + ["--data", str(tmp_path / "run" / "data_5.pt"), "--export",
                                                       str(out)]))
    assert folder == str(out / "run_data_5") and not (tmp_path / "results").exists()  # nothing trained
    tree = ImageFolder(os.path.join(folder, "images"))
    assert tree.classes == CIFAR10_NAMES and tree.class_to_idx == {n: i for i, n in enumerate(CIFAR10_NAMES)}
    assert len(tree) == 20 and [label for _, label in tree.samples] == [c for c in range(10) for _ in range(2)]
    tensors = torch.load(os.path.join(folder, "tensors.pt"), weights_only=True)
    data = torch.load(tmp_path / "run" / "data_5.pt", weights_only=True)[0]
    assert torch.equal(tensors["images"], data)
    assert torch.equal(tensors["hard_labels"], torch.arange(10).repeat_interleave(2))
    _, _, info = load_dataset("cifar10", cifar[3])
    assert torch.allclose(tensors["image_tensor"], normalize(data, info.mean, info.std))
    assert tensors["image_tensor"].shape == (20, 3, 32, 32) and tensors["class_names"] == CIFAR10_NAMES
    first = np.asarray(tree.loader(tree.samples[3][0]))  # class 1's second image, as 8-bit pixels
    assert np.array_equal(first, data[3].mul(255).round().byte().permute(1, 2, 0).numpy())
    assert "soft_labels" not in tensors


def test_export_replaces_its_own_sets_and_refuses_a_foreign_folder(cifar, tmp_path):
    out = tmp_path / "exported"
    argv = cifar + ["--data", str(tmp_path / "run" / "data_5.pt"), "--export", str(out)]
    evaluate.main(parse("evaluate", argv))
    (out / "run_data_5" / "images" / "cat" / "extra.png").write_bytes(b"")
    evaluate.main(parse("evaluate", argv))  # our folder: the set is written again, whole
    assert not (out / "run_data_5" / "images" / "cat" / "extra.png").exists()
    assert sorted(os.listdir(out)) == ["export.json", "run_data_5"]  # no temp folder left
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(UserError, match="is a non-empty folder that evaluate.py did not export to"):
        parse("evaluate", cifar + ["--data", str(tmp_path / "run" / "data_5.pt"), "--export", str(tmp_path / "mine")])


def test_an_export_never_replaces_another_sets_export_of_the_same_name(cifar, tmp_path):
    out = tmp_path / "exported"
    other = tmp_path / "elsewhere" / "run" / "data_5.pt"  # the same <run>_<set> name, another set
    SyntheticSet(10, 2, 3, 32, seed=7).save(str(other))
    first, = evaluate.main(parse("evaluate", cifar + ["--data", str(tmp_path / "run" / "data_5.pt"), "--export",
                                                      str(out)]))
    second, = evaluate.main(parse("evaluate", cifar + ["--data", str(other), "--export", str(out)]))
    assert (first, second) == (str(out / "run_data_5"), str(out / "run_data_5_2"))
    ours = torch.load(out / "run_data_5" / "tensors.pt", weights_only=True)["images"]
    assert torch.equal(ours, torch.load(tmp_path / "run" / "data_5.pt", weights_only=True)[0])
    again, = evaluate.main(parse("evaluate", cifar + ["--data", str(other), "--export", str(out)]))
    assert again == second and sorted(os.listdir(out)) == ["export.json", "run_data_5", "run_data_5_2"]


def test_export_with_soft_labels_holds_the_teachers_logits(cifar, tmp_path):
    experts = str(tmp_path / "experts")
    pretrain.main(parse("pretrain", cifar + ["--pretrain_amount", "1", "--pretrain_epochs", "1", "--pretrain_dir",
                                             experts]))
    folder, = evaluate.main(parse("evaluate", cifar + ["--data", str(tmp_path / "run" / "data_5.pt"), "--labels",
                                                       "soft", "--pretrain_dir", experts, "--export",
                                                       str(tmp_path / "out")]))
    tensors = torch.load(os.path.join(folder, "tensors.pt"), weights_only=True)
    assert tensors["soft_labels"].shape == (20, 10) and torch.isfinite(tensors["soft_labels"]).all()


def test_class_folders_keep_the_class_order_under_sorting():
    assert class_folders(["0", "1", "2"]) == ["0", "1", "2"]
    assert class_folders(["b", "a/x"]) == ["0_b", "1_a_x"]  # sorted ImageFolder order would swap them
    numbers = class_folders([str(i) for i in range(11)])
    assert numbers[:3] == ["00_0", "01_1", "02_2"] and sorted(numbers) == numbers
