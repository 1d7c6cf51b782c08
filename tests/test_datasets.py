"""data/datasets.py on tiny fixtures written in each dataset's real on-disk format (tests/fixtures.py)."""
import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from data import datasets as D
from data import formats
from data.datasets import DATASETS, ImageFiles, Split, load_dataset, peek_dataset
from data.formats import channel_stats, list_images, load_image, read_class_file
from tests import fixtures as F
from utils import UserError

SUBSETS = ("imagenette", "imagewoof", "imagemeow", "imagesquawk", "imagefruit", "imageyellow")
# (nclass, channels, size) each default fixture loads as.
EXPECTED = {"mnist": (10, 1, 28), "fashion": (10, 1, 28), "cifar10": (10, 3, 32), "cifar100": (100, 3, 32),
            "svhn": (10, 3, 32), "tinyimagenet": (3, 3, 64), "imagenet": (10, 3, 224), "folder": (3, 3, 32),
            "digits": (10, 1, 16), "patches": (10, 3, 16), **{n: (10, 3, 128) for n in SUBSETS}}
# the official data.py's MEANS and STDS
STATS = {"cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
         "cifar100": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
         "svhn": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
         "mnist": ((0.1307,), (0.3081,)), "fashion": ((0.2861,), (0.3530,)),
         **{n: ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)) for n in SUBSETS + ("imagenet", "tinyimagenet")}}
NO_FLIP = {"svhn", "mnist", "digits"}


def _load(name, tmp_path, **kw):
    return load_dataset(name, F.write_fixture(name, tmp_path), **kw)


def _class_means(split):
    """Mean pixel of each class's images (an ImageFiles is read through fancy indexing)."""
    images = split.images[torch.arange(len(split))] if isinstance(split.images, ImageFiles) else split.images
    per_image = images.flatten(1).double().mean(1)
    nclass = int(split.labels.max()) + 1
    sums = torch.zeros(nclass, dtype=torch.float64).index_add_(0, split.labels, per_image)
    return (sums / torch.bincount(split.labels, minlength=nclass)).tolist()


def test_registry_and_fixtures_cover_every_dataset():
    assert set(EXPECTED) == set(DATASETS) == set(F.FIXTURES)


def test_readers_live_in_formats_and_stay_importable_from_datasets():
    import ast

    for name in ("ImageFiles", "read_class_file", "channel_stats", "list_images", "load_image"):
        assert getattr(D, name) is getattr(formats, name)
    tree = ast.parse(open(formats.__file__).read())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not {m for m in imported if m and m.startswith("data")}  # a leaf below datasets.py


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "imagenette", "imagenet"])
def test_fixtures_hold_four_training_images_per_class(name, tmp_path):
    train, _, info = _load(name, tmp_path)
    assert min(F.class_counts(train, info.nclass)) >= 4


@pytest.mark.parametrize("name", list(DATASETS))
def test_every_dataset_loads_its_fixture(name, tmp_path):
    train, test, info = _load(name, tmp_path)
    nclass, channels, size = EXPECTED[name]
    assert (info.name, info.nclass, info.channels, info.size) == (name, nclass, channels, size)
    peek = peek_dataset(name, str(tmp_path))
    assert peek == {"nclass": nclass, "channels": channels, "size": size, "class_names": info.class_names}
    assert len(info.class_names) == nclass and len(set(info.class_names)) == nclass
    assert len(info.mean) == len(info.std) == channels
    if name in STATS:
        assert (info.mean, info.std) == STATS[name]
    assert info.eval_dsa == ("color_crop_scale_rotate" if name in NO_FLIP else "color_crop_flip_scale_rotate")
    assert info.cifar_layout == name.startswith("cifar")
    assert info.imagenet_epochs == (name in SUBSETS or name == "imagenet")
    for split in (train, test):
        assert isinstance(split, Split)
        assert (ImageFiles if name == "imagenet" else torch.Tensor) == type(split.images)
        assert split.images.dtype == torch.uint8 and split.labels.dtype == torch.int64
        assert tuple(split.images.shape[1:]) == (channels, size, size)
        assert len(split) == len(split.images) == split.labels.shape[0]
        assert split.labels.min() >= 0 and split.labels.max() < nclass
        assert set(split.labels.tolist()) == set(range(nclass))
        if name not in ("digits", "patches"):  # the embedded ones are real data
            # The fixtures make class c brighter with c: labels are attached to the right images, in order.
            means = _class_means(split)
            assert means == sorted(means), means


def test_cifar_row_to_chw(tmp_path):
    root = F.write_cifar10(tmp_path)
    path = os.path.join(root, "cifar-10-batches-py", "data_batch_1")
    with open(path, "rb") as f:
        batch = pickle.load(f)
    batch["data"][0] = 0
    batch["data"][0, 1 * 1024 + 3 * 32 + 5] = 255  # green plane, row 3, column 5
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=2)
    train, _, info = load_dataset("cifar10", root)
    assert torch.nonzero(train.images[0]).tolist() == [[1, 3, 5]]
    assert train.labels[:len(batch["labels"])].tolist() == batch["labels"]
    assert info.class_names == tuple(F.CIFAR10_NAMES)


def test_cifar_refuses_pickled_code(tmp_path):
    root = F.write_cifar10(tmp_path)
    with open(os.path.join(root, "cifar-10-batches-py", "test_batch"), "wb") as f:
        pickle.dump({"data": os.system}, f)
    with pytest.raises(UserError, match="test_batch"):
        load_dataset("cifar10", root)


def test_svhn_layout_and_label_10_is_digit_0(tmp_path):
    import scipy.io

    root = F.write_svhn(tmp_path)
    path = os.path.join(root, "SVHN", "test_32x32.mat")
    mat = scipy.io.loadmat(path)
    mat["X"][:, :, :, 2] = 0
    mat["X"][4, 7, 2, 2] = 200  # row 4, column 7, blue channel, image 2
    scipy.io.savemat(path, {"X": mat["X"], "y": mat["y"]})
    _, test, _ = load_dataset("svhn", root)
    assert torch.nonzero(test.images[2]).tolist() == [[2, 4, 7]]
    y = mat["y"].reshape(-1)
    assert test.labels.tolist() == [0 if v == 10 else int(v) for v in y]
    assert (y == 10).sum() == (test.labels == 0).sum() > 0


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_plain_and_gzip_idx(gz, tmp_path):
    root = F.write_mnist(tmp_path, gz=gz)
    train, test, _ = load_dataset("mnist", root)
    assert train.images.shape == (40, 1, 28, 28) and test.images.shape == (20, 1, 28, 28)


def test_tinyimagenet_raw_val_labels_follow_annotations(tmp_path):
    root = F.write_tinyimagenet(tmp_path / "raw", nclass=3, raw_val=True)
    _, test, info = load_dataset("tinyimagenet", root)
    with open(os.path.join(root, "val", "val_annotations.txt")) as f:
        rows = [line.split("\t") for line in f if line.strip()]
    wnids = sorted(os.listdir(os.path.join(root, "train")))
    assert list(info.class_names) == wnids
    expected = sorted((wnids.index(wnid), fname) for fname, wnid, *_ in rows)
    assert test.labels.tolist() == [label for label, _ in expected]
    for i, (_, fname) in enumerate(expected):
        direct = load_image(os.path.join(root, "val", "images", fname), 64)
        assert torch.equal(test.images[i], direct)
    # The same data with val already split into class folders loads identically.
    folders = F.write_tinyimagenet(tmp_path / "folders", nclass=3, raw_val=False)
    train2, test2, _ = load_dataset("tinyimagenet", folders)
    train1, _, _ = load_dataset("tinyimagenet", root)
    assert torch.equal(train1.images, train2.images) and torch.equal(test.labels, test2.labels)


def test_tinyimagenet_resizes_other_sizes_and_accepts_parent_folder(tmp_path):
    F.write_tinyimagenet(tmp_path / "tiny-imagenet-200", nclass=2, image_size=72)
    train, _, info = load_dataset("tinyimagenet", tmp_path)
    assert train.images.shape[1:] == (3, 64, 64) and info.size == 64


@pytest.mark.parametrize("name", SUBSETS)
def test_subset_labels_follow_class_file(name, tmp_path):
    train, test, info = _load(name, tmp_path)
    lines = open(os.path.join(os.path.dirname(D.__file__), "classes", f"{name}.txt")).read().split()
    assert list(info.class_names) == lines
    root = str(tmp_path)
    for split_dir, split in (("train", train), ("val", test)):
        for label, wnid in enumerate(lines):
            files = sorted(os.listdir(os.path.join(root, split_dir, wnid)))
            assert (split.labels == label).sum() == len(files)


def test_resize_crop_matches_torchvision(tmp_path):
    from torchvision import transforms as T

    for k, (w, h) in enumerate(((150, 140), (140, 171), (33, 97), (128, 128))):
        path = str(tmp_path / f"{k}.png")
        Image.fromarray(np.random.default_rng(k).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        ref = T.Compose([T.Resize(128), T.CenterCrop(128), T.PILToTensor()])(Image.open(path).convert("RGB"))
        assert torch.equal(load_image(path, 128), ref)


def test_image_files_match_in_memory_decode(tmp_path):
    train, _, _ = _load("imagenette", tmp_path)
    paths = [p for wnid in read_class_file("imagenette") for p in list_images(tmp_path / "train" / wnid)]
    files = ImageFiles(paths, 128)
    assert files.shape == train.images.shape == (40, 3, 128, 128) and len(files) == 40
    assert torch.equal(files[3], train.images[3]) and torch.equal(files[-1], train.images[-1])
    assert torch.equal(files[[0, 5, 7]], train.images[[0, 5, 7]])
    assert torch.equal(files[torch.tensor([39, 2])], train.images[torch.tensor([39, 2])])
    assert torch.equal(files[4:8], train.images[4:8])
    assert torch.equal(files[torch.arange(40)], train.images)
    with pytest.raises(IndexError):
        files[40]


def test_imagenet_streams_the_class100_slice(tmp_path):
    root = F.write_imagenet(tmp_path, nclass=10, phase=1)
    train, test, info = load_dataset("imagenet", root, nclass=10, phase=1)
    assert list(info.class_names) == read_class_file("class100")[10:20]
    assert isinstance(train.images, ImageFiles) and isinstance(test.images, ImageFiles)
    assert len(train) == 40 and len(test) == 10
    assert torch.equal(train.images[0], load_image(train.images.paths[0], 224))
    assert [os.path.basename(os.path.dirname(p)) for p in train.images.paths[::4]] == list(info.class_names)
    with pytest.raises(UserError, match="--nclass 7: imagenet takes 10 or 100 .* of which there are 11; pass --nclass 11"):
        load_dataset("imagenet", root, nclass=7)
    with pytest.raises(UserError, match="--phase"):
        load_dataset("imagenet", root, nclass=100, phase=1)


def test_imagenet_every_class_folder_sorted_by_wnid(tmp_path):
    """ImageNet-1K's selection (--nclass 1000: all of train/, sorted WNIDs), scaled down to 12 folders."""
    root = F.write_imagenet(tmp_path, nclass=10, distractors=2)
    folders = sorted(os.listdir(tmp_path / "train"))
    assert len(folders) == 12
    train, test, info = load_dataset("imagenet", root, nclass=12)
    assert list(info.class_names) == folders and info.nclass == 12
    assert isinstance(train.images, ImageFiles) and sorted(set(train.labels.tolist())) == list(range(12))
    assert [os.path.basename(os.path.dirname(p)) for p in train.images.paths[::4]] == folders
    with pytest.raises(UserError, match="drop it"):
        load_dataset("imagenet", root, nclass=12, phase=1)


def test_imagenet_seeded_class_subset(tmp_path):
    root = F.write_imagenet(tmp_path, nclass=10, distractors=1)
    folders = sorted(os.listdir(tmp_path / "train"))
    _, _, info = load_dataset("imagenet", root, nclass=10, seed=3)
    np.random.seed(3)  # the reference's find_subclasses: np.random.seed(dseed); permutation of sorted folders
    assert list(info.class_names) == list(np.random.permutation(folders)[:10])


@pytest.mark.parametrize("gray", [False, True])
def test_folder_channels_stats_and_test_dir(gray, tmp_path):
    root = F.write_folder(tmp_path, nclass=3, gray=gray, val_name="test")
    train, test, info = load_dataset("folder", root, size=24)
    assert info.channels == (1 if gray else 3) and info.size == 24
    assert train.images.shape == (12, info.channels, 24, 24) and test.images.shape == (6, info.channels, 24, 24)
    assert info.class_names == ("class_0", "class_1", "class_2")
    assert (info.mean, info.std) == channel_stats(train.images)


def test_digits_split_and_stats():
    train, test, info = load_dataset("digits", None)
    train2, test2, _ = load_dataset("digits", "/ignored")
    assert torch.equal(train.images, train2.images) and torch.equal(test.labels, test2.labels)
    assert len(train) == 1347 and len(test) == 450
    assert train.images.shape[1:] == (1, 16, 16)
    counts_train, counts_test = torch.bincount(train.labels), torch.bincount(test.labels)
    assert ((counts_test.float() / (counts_train + counts_test)) - 0.25).abs().max() < 0.02  # stratified
    assert (info.mean, info.std) == channel_stats(train.images)
    assert int(train.images.max()) == 255 and int(train.images.min()) == 0


def test_patches_are_seeded_and_test_pixels_are_never_training_pixels():
    from data import photo_patches as P

    train, test, info = load_dataset("patches", None)
    again, _, _ = load_dataset("patches", "/ignored")
    assert torch.equal(train.images, again.images)
    assert len(train) == 10 * P.TRAIN_PER_CLASS and len(test) == 10 * P.TEST_PER_CLASS
    assert F.class_counts(train, 10) == [P.TRAIN_PER_CLASS] * 10 and F.class_counts(test, 10) == [P.TEST_PER_CLASS] * 10
    assert (info.mean, info.std) == channel_stats(train.images) and len(set(info.class_names)) == 10
    for width in (128, 129, 150, 203):  # the stripes of the two regions never share a column
        train_cols = {c for a, b in P.stripes(width, 16, False) for c in range(a, b)}
        test_cols = {c for a, b in P.stripes(width, 16, True) for c in range(a, b)}
        assert train_cols and test_cols and not train_cols & test_cols and max(train_cols | test_cols) < width
    # a patch never crosses its stripe: an image whose pixels hold their column shows where each patch was cut
    columns = np.broadcast_to(np.arange(96, dtype=np.uint8)[None, :, None], (40, 96, 3)).copy()
    rng = np.random.default_rng(1)
    for test_region in (False, True):
        regions = P.stripes(96, 8, test_region)
        for patch in P.cut(columns, 8, 50, test_region, rng):
            first, last = int(patch[0, 0, 0]), int(patch[0, 0, -1])
            assert last - first == 7 and any(a <= first and last < b for a, b in regions), (first, regions)
    larger, _, info32 = load_dataset("patches", None, size=24)
    assert larger.images.shape[1:] == (3, 24, 24) and info32.size == 24


def test_class_files():
    first_last = {"imagenette": ("n01440764", "n03888257"), "imagewoof": ("n02096294", "n02105641"),
                  "imagemeow": ("n02123045", "n02127052"), "imagesquawk": ("n01806143", "n01819313"),
                  "imagefruit": ("n07753275", "n07760859"), "imageyellow": ("n02206856", "n01531178"),
                  "class100": ("n02869837", "n02090622")}
    for name, (first, last) in first_last.items():
        wnids = read_class_file(name)
        assert len(wnids) == len(set(wnids)) == (100 if name == "class100" else 10)
        assert (wnids[0], wnids[-1]) == (first, last)
    assert read_class_file("class100")[9:11] == ["n01773797", "n01735189"]  # ImageNet-10 ends at 10


# ---------------------------------------------------------------------------------------------------
# User errors: one line that names the problem and the fix

def _error(fn, *args, **kw):
    with pytest.raises(UserError) as e:
        fn(*args, **kw)
    message = str(e.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("name,expected", [("mnist", "MNIST/raw/train-images-idx3-ubyte"),
                                           ("fashion", "FashionMNIST/raw/train-images-idx3-ubyte"),
                                           ("cifar10", "cifar-10-batches-py/data_batch_1"),
                                           ("cifar100", "cifar-100-python/train"),
                                           ("svhn", "SVHN/train_32x32.mat")])
def test_missing_torchvision_files_suggest_download(name, expected, tmp_path):
    message = _error(load_dataset, name, str(tmp_path))
    assert "--download" in message and "--data_dir" in message and expected in message


@pytest.mark.parametrize("name", ["tinyimagenet", "imagenette", "imagenet", "folder"])
def test_missing_image_trees(name, tmp_path):
    assert str(tmp_path) in _error(load_dataset, name, str(tmp_path))


def test_missing_subset_class_folder_names_the_wnid(tmp_path):
    root = F.write_imagenet_subset(tmp_path, "imagewoof")
    os.rename(tmp_path / "val" / "n02087394", tmp_path / "elsewhere")
    message = _error(load_dataset, "imagewoof", root)
    assert "n02087394" in message and os.path.join(str(tmp_path), "val") in message


def test_empty_class_folder(tmp_path):
    root = F.write_folder(tmp_path)
    os.makedirs(tmp_path / "train" / "class_9")
    os.makedirs(tmp_path / "val" / "class_9")
    assert "class_9" in _error(load_dataset, "folder", root)


def test_folder_with_mismatched_val_classes(tmp_path):
    root = F.write_folder(tmp_path)
    os.rename(tmp_path / "val" / "class_2", tmp_path / "val" / "other")
    message = _error(load_dataset, "folder", root)
    assert "class_2" in message and "different class folders" in message


def test_unknown_name_lists_valid_names():
    message = _error(load_dataset, "cifar11", "/tmp")
    assert all(name in message for name in DATASETS)


def test_bad_files_and_options(tmp_path):
    root = F.write_mnist(tmp_path)
    with open(os.path.join(root, "MNIST", "raw", "t10k-labels-idx1-ubyte"), "wb") as f:
        f.write(b"\x01\x02")
    assert "--download" in _error(load_dataset, "mnist", root)
    assert "--size" in _error(load_dataset, "cifar10", str(tmp_path), size=64)
    root = F.write_tinyimagenet(tmp_path / "tiny", nclass=2)
    with open(os.path.join(root, "val", "val_annotations.txt"), "a") as f:
        f.write("val_0.JPEG\tn99999999\t0\t0\t1\t1\n")
    assert "n99999999" in _error(load_dataset, "tinyimagenet", root)
    bad = tmp_path / "folder"
    F.write_folder(bad)
    (bad / "train" / "class_0" / "img_0.png").write_bytes(b"not a png")
    assert "img_0.png" in _error(load_dataset, "folder", str(bad))


def test_download_goes_through_torchvision(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    calls = []

    def fake(writer):
        def cls(root, download=False, **kw):
            calls.append((root, download, kw))
            writer(os.path.dirname(root) if root.endswith("SVHN") else root)
        return cls

    monkeypatch.setattr(tvd, "CIFAR10", fake(F.write_cifar10))
    monkeypatch.setattr(tvd, "SVHN", fake(F.write_svhn))
    train, _, _ = load_dataset("cifar10", str(tmp_path), download=True)
    assert len(train) == 40 and calls[0] == (str(tmp_path), True, {"train": True})
    calls.clear()
    load_dataset("svhn", str(tmp_path), download=True)
    assert [c[2] for c in calls] == [{"split": "train"}, {"split": "test"}]
    assert calls[0][0] == os.path.join(str(tmp_path), "SVHN")


def test_one_class_datasets_are_refused(tmp_path):
    root = F.write_folder(tmp_path / "folder", nclass=1)
    message = _error(load_dataset, "folder", root)
    assert "1 class (class_0)" in message and "at least 2 classes" in message and "add class folders" in message
    assert _error(peek_dataset, "folder", root) == message
    tiny = F.write_tinyimagenet(tmp_path / "tiny", nclass=1)
    assert "at least 2 classes" in _error(load_dataset, "tinyimagenet", tiny)


# ---------------------------------------------------------------------------------------------------
# peek_dataset: the facts, without decoding an image

@pytest.fixture
def no_decoding(monkeypatch):
    """Any pixel decode fails the test: the readers, and PIL's own load()."""
    import PIL.ImageFile

    def fail(*args, **kw):
        raise AssertionError("peek_dataset decoded an image")

    for module, name in ((formats, "load_image"), (formats, "decode_images"), (D, "decode_images"),
                         (PIL.ImageFile.ImageFile, "load")):
        monkeypatch.setattr(module, name, fail)


@pytest.mark.parametrize("gray", [False, True])
def test_peek_folder_lists_classes_and_detects_gray(gray, tmp_path, no_decoding):
    root = F.write_folder(tmp_path, nclass=3, gray=gray)
    assert peek_dataset("folder", root, size=24) == {"nclass": 3, "channels": 1 if gray else 3, "size": 24,
                                                     "class_names": ("class_0", "class_1", "class_2")}
    assert peek_dataset("folder", root)["size"] == 32


def test_peek_cifar10_gives_the_table_facts(tmp_path, no_decoding):
    assert peek_dataset("cifar10", str(tmp_path)) == {"nclass": 10, "channels": 3, "size": 32, "class_names": None}
    root = F.write_cifar10(tmp_path)
    assert peek_dataset("cifar10", root)["class_names"] == tuple(F.CIFAR10_NAMES)
    assert "--size" in _error(peek_dataset, "cifar10", root, size=64)
    assert "--data_dir" in _error(peek_dataset, "cifar10", None)
    assert peek_dataset("digits", None)["nclass"] == 10


def test_peek_imagenet_slices_the_class_list(tmp_path, no_decoding):
    root = F.write_imagenet(tmp_path, nclass=10, phase=1)
    peek = peek_dataset("imagenet", root, size=64, nclass=10, phase=1)
    assert peek == {"nclass": 10, "channels": 3, "size": 64, "class_names": tuple(read_class_file("class100")[10:20])}
    assert "--phase" in _error(peek_dataset, "imagenet", root, nclass=100, phase=1)
    assert peek_dataset("imagenette", F.write_imagenet_subset(tmp_path / "nette", "imagenette"))["size"] == 128


@pytest.mark.parametrize("name", ["tinyimagenet", "imagenette", "imagenet", "folder"])
def test_peek_raises_load_datasets_errors_for_missing_folders(name, tmp_path):
    assert _error(peek_dataset, name, str(tmp_path)) == _error(load_dataset, name, str(tmp_path))


def test_peek_names_a_missing_class_folder(tmp_path):
    root = F.write_imagenet_subset(tmp_path, "imagewoof")
    os.rename(tmp_path / "val" / "n02087394", tmp_path / "elsewhere")
    assert _error(peek_dataset, "imagewoof", root) == _error(load_dataset, "imagewoof", root)
