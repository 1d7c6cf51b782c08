"""Dataset loading: every dataset's facts in one table (DATASETS), `load_dataset(name, root, ...)` and
`peek_dataset`, which tells those facts without decoding an image.

Each loader composes the readers of data/formats.py (MNIST idx, CIFAR pickles, SVHN .mat, ImageFolder trees,
Tiny-ImageNet's raw val layout) into splits of uint8 images, unnormalised, as (N, C, H, W) tensors in memory;
ImageNet is streamed from its files through `ImageFiles` (the official common.py `load_resized_data`).
Normalisation constants are the official data.py's `MEANS` and `STDS`.
"""
import os
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch

from data.formats import (ImageFiles, channel_stats, class_dirs, class_tree, decode_images, is_gray, list_classes,
                          read_cifar_batch, read_cifar_names, read_class_file, read_idx, read_svhn_mat,
                          read_val_annotations, require)
from data.formats import list_images, load_image  # noqa: F401  (re-exported for older callers)
from data.photo_patches import CLASS_NAMES as PATCH_NAMES, SIZE as patch_size, patch_splits
from utils import UserError

# Evaluation DSA strategies after CutMix removed `cutout` (the official dataset block after parsing): digits
# lose `flip`.
DSA_FLIP = "color_crop_flip_scale_rotate"
DSA_NO_FLIP = "color_crop_scale_rotate"

CIFAR_STATS = ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
SVHN_STATS = ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970))
MNIST_STATS = ((0.1307,), (0.3081,))
FASHION_STATS = ((0.2861,), (0.3530,))
IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
# Computed once from the digits training split at 16x16 by `channel_stats` (tests/test_datasets.py recomputes).
DIGITS_STATS = ((0.3052,), (0.3185,))

DIGIT_NAMES = tuple(str(i) for i in range(10))
FASHION_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                 "Ankle boot")  # torchvision's FashionMNIST.classes


@dataclass(frozen=True)
class DatasetInfo:
    """Facts about a loaded dataset, read by models, augmentation, training and evaluation."""
    name: str
    nclass: int
    channels: int
    size: int
    mean: tuple
    std: tuple
    class_names: tuple
    eval_dsa: str          # DSA strategy of the evaluation recipe (the official dataset block)
    cifar_layout: bool     # ResNet/ResNetAP use their CIFAR stem
    imagenet_epochs: bool  # evaluation epochs come from the ipc table (the official `ipc_epoch`)


@dataclass
class Split:
    """One split: uint8 images (N, C, H, W), in memory or an ImageFiles, and int64 labels (N,)."""
    images: "torch.Tensor | ImageFiles"
    labels: torch.Tensor

    def __len__(self):
        return len(self.labels)

    def to(self, device):
        """The split with in-memory images and labels on `device` (file-backed images stay on disk)."""
        images = self.images.to(device) if torch.is_tensor(self.images) else self.images
        return Split(images, self.labels.to(device))

    def subset(self, index):
        """The images and labels at `index` (a CPU LongTensor of positions)."""
        if torch.is_tensor(self.images):
            images = self.images[index.to(self.images.device)]
        else:
            images = ImageFiles([self.images.paths[i] for i in index.tolist()], self.images.size,
                                self.images.channels)
        return Split(images, self.labels[index.to(self.labels.device)])


def holdout(split, nclass, fraction, seed=0, class_names=None):
    """(rest, held-out): a seeded per-class `fraction` of `split`, each class keeping at least one image on each side.

    A class holds out round(fraction * count) images, at least 1 and at most count - 1; a class with fewer than
    2 images cannot be split and is refused.
    """
    generator = torch.Generator().manual_seed(seed)
    labels = split.labels.cpu()
    keep, held = [], []
    for c in range(nclass):
        index = torch.nonzero(labels == c).flatten()
        count = len(index)
        if count < 2:
            name = f" ({class_names[c]})" if class_names is not None and c < len(class_names) else ""
            raise UserError(f"class {c}{name} has {count} training image{'' if count == 1 else 's'}: holding out "
                            f"--val_split {fraction} of each class (at least 1 image) would leave it none to train "
                            f"on; add images to that class, or drop --val_split (no held-out split)")
        index = index[torch.randperm(count, generator=generator)]
        n = min(max(1, round(fraction * count)), count - 1)
        held.append(index[:n])
        keep.append(index[n:])
    return split.subset(torch.cat(keep).sort().values), split.subset(torch.cat(held).sort().values)


def _enough_classes(name, root, classes):
    """Condensation aligns classes against each other: one class (or none) is refused."""
    if len(classes) < 2:
        shown = f" ({', '.join(classes)})" if classes else ""
        raise UserError(f"{name} dataset under {root} has {len(classes)} class{'' if len(classes) == 1 else 'es'}"
                        f"{shown}; condensation needs at least 2 classes: add class folders")


# ---------------------------------------------------------------------------------------------------
# Loaders: loader(name, root, size, nclass, phase, seed) -> (train Split, test Split, facts overriding the table)
# Peeks: peek(name, root, size, nclass, phase, seed) -> the facts a loader would give, without decoding images

TORCHVISION_HINT = "pass --download to fetch it or --data_dir to point at it"


def torchvision_fetcher(cls_name, subdir="", split_arg=False):
    """A download function for `torchvision.datasets.<cls_name>` writing its own layout under root/subdir."""
    def fetch(name, root):
        import torchvision.datasets as tvd

        try:
            for train in (True, False):
                kw = {"split": "train" if train else "test"} if split_arg else {"train": train}
                getattr(tvd, cls_name)(os.path.join(root, subdir) if subdir else root, download=True, **kw)
        except Exception as e:  # URLError, OSError, RuntimeError (bad checksum) ...
            raise UserError(f"could not download {name} into {root} ({type(e).__name__}: {e}); "
                            f"check the network or place the files there yourself")
    return fetch


def _load_mnist_like(name, root, folder):
    def idx(stem):
        return (f"{folder}/raw/{stem}", f"{folder}/raw/{stem}.gz")

    files = require(root, name, [idx("train-images-idx3-ubyte"), idx("train-labels-idx1-ubyte"),
                                 idx("t10k-images-idx3-ubyte"), idx("t10k-labels-idx1-ubyte")],
                    TORCHVISION_HINT)
    splits = []
    for img_path, lab_path in ((files[0], files[1]), (files[2], files[3])):
        images, labels = read_idx(img_path), read_idx(lab_path)
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise UserError(f"{img_path} and {lab_path} do not match (shapes {images.shape}, {labels.shape}); "
                            f"delete them and pass --download again")
        splits.append(Split(torch.from_numpy(images.astype(np.uint8)).unsqueeze(1),
                            torch.from_numpy(labels.astype(np.int64))))
    return splits[0], splits[1], {}


def load_mnist(name, root, **_):
    """MNIST idx files under root/MNIST/raw (torchvision's layout)."""
    return _load_mnist_like(name, root, "MNIST")


def load_fashion(name, root, **_):
    """Fashion-MNIST idx files under root/FashionMNIST/raw (torchvision's layout)."""
    return _load_mnist_like(name, root, "FashionMNIST")


CIFAR10_BASE, CIFAR100_BASE = "cifar-10-batches-py", "cifar-100-python"


def load_cifar10(name, root, **_):
    """CIFAR-10 python batches under root/cifar-10-batches-py."""
    base = CIFAR10_BASE
    rels = [f"{base}/data_batch_{i}" for i in range(1, 6)] + [f"{base}/test_batch", f"{base}/batches.meta"]
    files = require(root, name, rels, TORCHVISION_HINT)
    parts = [read_cifar_batch(p, "labels") for p in files[:5]]
    train = Split(torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]))
    test = Split(*read_cifar_batch(files[5], "labels"))
    return train, test, {"class_names": read_cifar_names(files[6], "label_names")}


def load_cifar100(name, root, **_):
    """CIFAR-100 python files under root/cifar-100-python (fine labels)."""
    base = CIFAR100_BASE
    files = require(root, name, [f"{base}/train", f"{base}/test", f"{base}/meta"], TORCHVISION_HINT)
    train = Split(*read_cifar_batch(files[0], "fine_labels"))
    test = Split(*read_cifar_batch(files[1], "fine_labels"))
    return train, test, {"class_names": read_cifar_names(files[2], "fine_label_names")}


def cifar_peek(meta_rel, key):
    """A peek giving the class names of the CIFAR meta file when it is there (None until downloaded)."""
    def peek(name, root, **_):
        path = os.path.join(root, meta_rel)
        return {"class_names": read_cifar_names(path, key)} if os.path.isfile(path) else {}
    return peek


def load_svhn(name, root, **_):
    """SVHN .mat files under root/SVHN; label 10 means digit 0 (as torchvision)."""
    files = require(root, name, ["SVHN/train_32x32.mat", "SVHN/test_32x32.mat"], TORCHVISION_HINT)
    train, test = (Split(*read_svhn_mat(path)) for path in files)
    return train, test, {}


def _tiny_layout(name, root):
    """(root, train_dir, val_dir, classes) of an unpacked tiny-imagenet-200 folder (or its parent)."""
    if not os.path.isdir(os.path.join(root, "train")) and os.path.isdir(os.path.join(root, "tiny-imagenet-200")):
        root = os.path.join(root, "tiny-imagenet-200")
    train_dir, val_dir = os.path.join(root, "train"), os.path.join(root, "val")
    hint = ("download http://cs231n.stanford.edu/tiny-imagenet-200.zip, unzip it and pass --data_dir "
            "<path>/tiny-imagenet-200 (--download cannot fetch it)")
    for d in (train_dir, val_dir):
        if not os.path.isdir(d):
            raise UserError(f"tinyimagenet not found under {root} (expected {d}/ ...); {hint}")
    classes = list_classes(train_dir)
    if not classes:
        raise UserError(f"{train_dir} has no class folders; {hint}")
    _enough_classes(name, root, classes)
    return root, train_dir, val_dir, classes


def load_tinyimagenet(name, root, size=None, **_):
    """Tiny-ImageNet: root = the unpacked tiny-imagenet-200 folder; val as class folders or the raw layout."""
    size = size or 64
    root, train_dir, val_dir, classes = _tiny_layout(name, root)
    train_paths, train_labels = class_tree(train_dir, classes)
    annotations = os.path.join(val_dir, "val_annotations.txt")
    if os.path.isfile(annotations):
        val_paths, val_labels = read_val_annotations(annotations, os.path.join(val_dir, "images"), classes)
    else:
        missing = [c for c in classes if not os.path.isdir(os.path.join(val_dir, c))]
        if missing:
            raise UserError(f"{val_dir} has neither val_annotations.txt nor a folder for class {missing[0]}; "
                            f"re-unpack the dataset")
        val_paths, val_labels = class_tree(val_dir, classes)
    train = Split(decode_images(train_paths, size), train_labels)
    test = Split(decode_images(val_paths, size), val_labels)
    return train, test, {"nclass": len(classes), "class_names": tuple(classes), "size": size}


def peek_tinyimagenet(name, root, size=None, **_):
    classes = _tiny_layout(name, root)[3]
    return {"nclass": len(classes), "class_names": tuple(classes), "size": size or 64}


def _imagenet_dirs(name, root):
    train_dir, val_dir = os.path.join(root, "train"), os.path.join(root, "val")
    for d in (train_dir, val_dir):
        if not os.path.isdir(d):
            raise UserError(f"{name} not found under {root} (expected {d}/<wnid>/ ...): pass --data_dir pointing "
                            f"at an ImageNet-layout folder with train/ and val/ (--download cannot fetch it)")
    return train_dir, val_dir


def load_imagenet_subset(name, root, size=None, **_):
    """A 10-class ImageNet subset: classes and label order from data/classes/<name>.txt, decoded into memory."""
    size = size or 128
    train_dir, val_dir = _imagenet_dirs(name, root)
    classes = read_class_file(name)
    train_paths, train_labels = class_tree(train_dir, classes)
    val_paths, val_labels = class_tree(val_dir, classes)
    train = Split(decode_images(train_paths, size), train_labels)
    test = Split(decode_images(val_paths, size), val_labels)
    return train, test, {"class_names": tuple(classes), "size": size}


def peek_imagenet_subset(name, root, size=None, **_):
    classes = read_class_file(name)
    for split_dir in _imagenet_dirs(name, root):
        class_dirs(split_dir, classes)
    return {"class_names": tuple(classes), "size": size or 128}


def _imagenet_classes(name, root, nclass, phase, seed):
    """(train_dir, val_dir, nclass, classes): the ImageNet-10/100 class slice, in label order; any other --nclass
    takes every class folder of train/, sorted by WNID (ImageNet-1K: --nclass 1000), and must name their count."""
    nclass = 10 if nclass is None else nclass
    train_dir, val_dir = _imagenet_dirs(name, root)
    if nclass not in (10, 100):
        folders = list_classes(train_dir)
        if nclass != len(folders):
            raise UserError(f"--nclass {nclass}: imagenet takes 10 or 100 (slices of class100.txt) or every class "
                            f"folder of {train_dir}, of which there are {len(folders)}; pass --nclass {len(folders)}")
        if phase:
            raise UserError(f"--phase {phase} selects a slice of 10 or 100 classes; with every class (--nclass "
                            f"{nclass}) drop it")
        return train_dir, val_dir, nclass, folders
    p = max(0, phase or 0)  # the official default phase -1 means slice 0 (p = max(0, phase))
    if not seed:
        pool = read_class_file("class100")
    else:
        # the official data.py `find_subclasses` with dseed != 0: permute the sorted class folders.
        folders = list_classes(train_dir)
        pool = [folders[i] for i in np.random.RandomState(seed).permutation(len(folders))]
    if nclass * (p + 1) > len(pool):
        raise UserError(f"--phase {phase} with --nclass {nclass} needs classes {nclass * p}..{nclass * (p + 1) - 1} "
                        f"but only {len(pool)} are available; use --phase below {len(pool) // nclass}")
    return train_dir, val_dir, nclass, pool[nclass * p: nclass * (p + 1)]


def load_imagenet(name, root, size=None, nclass=None, phase=0, seed=0, **_):
    """ImageNet-10/100: a slice of class100.txt (seed 0) or of a seeded permutation; streamed from files."""
    size = size or 224
    train_dir, val_dir, nclass, classes = _imagenet_classes(name, root, nclass, phase, seed)
    train_paths, train_labels = class_tree(train_dir, classes)
    val_paths, val_labels = class_tree(val_dir, classes)
    train = Split(ImageFiles(train_paths, size), train_labels)
    test = Split(ImageFiles(val_paths, size), val_labels)
    return train, test, {"nclass": nclass, "class_names": tuple(classes), "size": size}


def peek_imagenet(name, root, size=None, nclass=None, phase=0, seed=0, **_):
    # Only the class folders are checked: listing 1.28M training files is the loader's job.
    train_dir, val_dir, nclass, classes = _imagenet_classes(name, root, nclass, phase, seed)
    for split_dir in (train_dir, val_dir):
        class_dirs(split_dir, classes)
    return {"nclass": nclass, "class_names": tuple(classes), "size": size or 224}


def _folder_tree(name, root):
    """(train paths, train labels, val paths, val labels, classes) of an ImageFolder tree; no image is opened."""
    train_dir = os.path.join(root, "train")
    val_dir = next((os.path.join(root, s) for s in ("val", "test") if os.path.isdir(os.path.join(root, s))), None)
    if not os.path.isdir(train_dir) or val_dir is None:
        raise UserError(f"folder dataset not found under {root} (expected {train_dir}/<class>/ and "
                        f"{os.path.join(root, 'val')}/<class>/ or test/); pass --data_dir pointing at such a tree")
    classes = list_classes(train_dir)
    if not classes:
        raise UserError(f"{train_dir} has no class folders; put each class's images in train/<class>/")
    _enough_classes(name, root, classes)
    val_classes = list_classes(val_dir)
    if val_classes != classes:
        only_train = sorted(set(classes) - set(val_classes))
        only_val = sorted(set(val_classes) - set(classes))
        diff = (f"only in train: {only_train[:3]}" if only_train
                else f"only in {os.path.basename(val_dir)}: {only_val[:3]}")
        raise UserError(f"{train_dir} and {val_dir} have different class folders ({diff}); give both the same classes")
    return (*class_tree(train_dir, classes), *class_tree(val_dir, classes), classes)


def load_folder(name, root, size=None, **_):
    """Any ImageFolder tree root/train/<class>/*, root/val (or test)/<class>/*; gray if every train image is."""
    size = size or 32
    train_paths, train_labels, val_paths, val_labels, classes = _folder_tree(name, root)
    channels = 1 if all(is_gray(p) for p in train_paths) else 3
    train_images = decode_images(train_paths, size, channels)
    mean, std = channel_stats(train_images)
    std = tuple(max(s, 1e-3) for s in std)  # a constant-colour set must not divide by zero
    train = Split(train_images, train_labels)
    test = Split(decode_images(val_paths, size, channels), val_labels)
    return train, test, {"nclass": len(classes), "channels": channels, "size": size, "mean": mean, "std": std,
                         "class_names": tuple(classes)}


def peek_folder(name, root, size=None, **_):
    train_paths, _, _, _, classes = _folder_tree(name, root)
    channels = 1 if all(is_gray(p) for p in train_paths) else 3
    return {"nclass": len(classes), "channels": channels, "size": size or 32, "class_names": tuple(classes)}


DIGITS_SIZE = 16


def load_digits(name, root=None, **_):
    """scikit-learn's bundled 8x8 digits: stratified 75/25 split (random_state=0), upsampled once to 16x16."""
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    d = sk_digits()
    x = torch.from_numpy(d.images.astype(np.float32) * (255.0 / 16.0)).unsqueeze(1)
    x = torch.nn.functional.interpolate(x, size=(DIGITS_SIZE, DIGITS_SIZE), mode="bilinear", align_corners=False)
    x = x.round().clamp(0, 255).to(torch.uint8)
    y = torch.from_numpy(d.target.astype(np.int64))
    train_idx, test_idx = train_test_split(np.arange(len(y)), test_size=0.25, stratify=d.target, random_state=0)
    train_idx, test_idx = torch.from_numpy(np.sort(train_idx)), torch.from_numpy(np.sort(test_idx))
    return Split(x[train_idx], y[train_idx]), Split(x[test_idx], y[test_idx]), {}


def load_patches(name, root=None, size=None, **_):
    """Patches of scikit-image's bundled colour images (data/photo_patches.py), normalised by their training split."""
    train_images, train_labels, test_images, test_labels = patch_splits(size or patch_size)
    mean, std = channel_stats(train_images)
    return Split(train_images, train_labels), Split(test_images, test_labels), {"size": size or patch_size,
                                                                                 "mean": mean, "std": std}


def peek_patches(name, root=None, size=None, **_):
    return {"size": size or patch_size}


# ---------------------------------------------------------------------------------------------------
# The table

@dataclass(frozen=True)
class DatasetSpec:
    """Facts about one dataset (None: read from the files) and the functions that read it."""
    loader: Callable
    nclass: Optional[int]
    channels: Optional[int]
    size: Optional[int]
    mean: Optional[tuple]
    std: Optional[tuple]
    class_names: tuple = ()
    eval_dsa: str = DSA_FLIP
    cifar_layout: bool = False
    imagenet_epochs: bool = False
    fetch: Optional[Callable] = None  # fetch(name, root): download with torchvision (--download)
    resizable: bool = False           # decoded from image files, so `size` may override the table's size
    needs_root: bool = True           # False: bundled with a package, `root` is ignored
    peek: Optional[Callable] = None   # the facts the files decide, without decoding images; None: the table's


def _subset():
    return DatasetSpec(load_imagenet_subset, 10, 3, 128, *IMAGENET_STATS, imagenet_epochs=True, resizable=True,
                       peek=peek_imagenet_subset)


DATASETS = {
    "mnist": DatasetSpec(load_mnist, 10, 1, 28, *MNIST_STATS, DIGIT_NAMES, DSA_NO_FLIP,
                         fetch=torchvision_fetcher("MNIST")),
    "fashion": DatasetSpec(load_fashion, 10, 1, 28, *FASHION_STATS, FASHION_NAMES,
                           fetch=torchvision_fetcher("FashionMNIST")),
    "cifar10": DatasetSpec(load_cifar10, 10, 3, 32, *CIFAR_STATS, cifar_layout=True,
                           fetch=torchvision_fetcher("CIFAR10"),
                           peek=cifar_peek(f"{CIFAR10_BASE}/batches.meta", "label_names")),
    "cifar100": DatasetSpec(load_cifar100, 100, 3, 32, *CIFAR_STATS, cifar_layout=True,
                            fetch=torchvision_fetcher("CIFAR100"),
                            peek=cifar_peek(f"{CIFAR100_BASE}/meta", "fine_label_names")),
    "svhn": DatasetSpec(load_svhn, 10, 3, 32, *SVHN_STATS, DIGIT_NAMES, DSA_NO_FLIP,
                        fetch=torchvision_fetcher("SVHN", subdir="SVHN", split_arg=True)),
    "tinyimagenet": DatasetSpec(load_tinyimagenet, 200, 3, 64, *IMAGENET_STATS, resizable=True,
                                peek=peek_tinyimagenet),
    **{n: _subset() for n in ("imagenette", "imagewoof", "imagemeow", "imagesquawk", "imagefruit", "imageyellow")},
    "imagenet": DatasetSpec(load_imagenet, None, 3, 224, *IMAGENET_STATS, imagenet_epochs=True, resizable=True,
                            peek=peek_imagenet),
    "folder": DatasetSpec(load_folder, None, None, None, None, None, resizable=True, peek=peek_folder),
    # NOTE: digits are orientation-sensitive like MNIST/SVHN, so their evaluation DSA has no flip.
    "digits": DatasetSpec(load_digits, 10, 1, DIGITS_SIZE, *DIGITS_STATS, DIGIT_NAMES, DSA_NO_FLIP,
                          needs_root=False),
    "patches": DatasetSpec(load_patches, 10, 3, patch_size, None, None, PATCH_NAMES, resizable=True, needs_root=False,
                           peek=peek_patches),
}


def _spec_and_root(name, root, size):
    """The dataset's spec and its root folder (expanded), after the checks that need no file."""
    if name not in DATASETS:
        raise UserError(f"unknown dataset '{name}'; choose one of: {', '.join(DATASETS)}")
    spec = DATASETS[name]
    if size is not None and not spec.resizable and size != spec.size:
        raise UserError(f"{name} images are {spec.size}x{spec.size}; --size {size} applies only to image-folder "
                        f"datasets and patches: drop it")
    if spec.needs_root:
        if not root:
            raise UserError(f"{name} needs a data folder; pass --data_dir")
        root = os.path.expanduser(str(root))
    return spec, root


def peek_dataset(name, root, size=None, nclass=None, phase=0, seed=0):
    """{"nclass", "channels", "size", "class_names"} of `name` known without decoding an image (None: not yet
    known, e.g. CIFAR class names before the download); raises load_dataset's errors for missing folders."""
    spec, root = _spec_and_root(name, root, size)
    facts = dict(nclass=spec.nclass, channels=spec.channels, size=spec.size, class_names=spec.class_names or None)
    if spec.peek is not None:
        facts.update(spec.peek(name, root, size=size, nclass=nclass, phase=phase, seed=seed))
    return facts


def load_dataset(name, root, download=False, size=None, nclass=None, phase=0, seed=0):
    """Load `name` from `root` -> (train Split, test Split, DatasetInfo); uint8 images, unnormalised.

    size: output size for the image-file datasets (folder default 32; tinyimagenet/subsets/imagenet keep their
    table size when None); the tensor datasets only accept their own size. nclass, phase, seed: the ImageNet
    class slice (seed = the reference's dseed; 0 uses class100.txt); ignored by the other datasets.
    """
    spec, root = _spec_and_root(name, root, size)
    if download and spec.needs_root and spec.fetch is not None:
        spec.fetch(name, root)
    train, test, facts = spec.loader(name, root, size=size, nclass=nclass, phase=phase, seed=seed)
    fields = dict(nclass=spec.nclass, channels=spec.channels, size=spec.size, mean=spec.mean, std=spec.std,
                  class_names=spec.class_names or tuple(str(i) for i in range(spec.nclass or 0)))
    fields.update(facts)
    info = DatasetInfo(name=name, eval_dsa=spec.eval_dsa, cifar_layout=spec.cifar_layout,
                       imagenet_epochs=spec.imagenet_epochs, **fields)
    for split_name, split in (("train", train), ("test", test)):
        _check_split(info, split_name, split, root)
    _enough_classes(name, root, info.class_names)
    return train, test, info


def _check_split(info, split_name, split, root):
    """Shapes, dtype and label range agree with the facts; otherwise the files are not what they claim."""
    expected = (info.channels, info.size, info.size)
    if tuple(split.images.shape[1:]) != expected or len(split.images) != len(split.labels):
        raise UserError(f"{info.name} {split_name} split under {root} has images of shape "
                        f"{tuple(split.images.shape)}, expected (N, {', '.join(map(str, expected))}) with "
                        f"{len(split.labels)} labels; the files are corrupt or not this dataset")
    if len(split.labels) == 0:
        raise UserError(f"{info.name} {split_name} split under {root} is empty; check --data_dir")
    lo, hi = int(split.labels.min()), int(split.labels.max())
    if lo < 0 or hi >= info.nclass or len(info.class_names) != info.nclass:
        raise UserError(f"{info.name} {split_name} labels span {lo}..{hi} but the dataset has {info.nclass} classes; "
                        f"the files are corrupt or not this dataset")
