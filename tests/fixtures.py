"""Tiny datasets written in each dataset's real on-disk format, for tests and end-to-end runs.

Every writer is deterministic (seeded) and makes class c's images brighter with c (plus noise), so a tiny
network can learn something. Each default fixture holds at least 4 training images per class: condensing 1
image per class at factor 2 takes 4 distinct real images of each class. Each writer returns the folder to pass
as --data_dir / load_dataset's root.
`write_fixture(name, root)` writes the default fixture of any dataset in data.datasets.DATASETS. Also the tests'
small helpers: `build_model` (a network by its constructor arguments) and `class_counts`.
"""
import gzip
import os
import pickle
import struct

import numpy as np
import torch
from PIL import Image

from data.formats import read_class_file
from models import MODELS, model_config

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def class_image(rng, label, nclass, height, width, channels=3):
    """uint8 (H, W, C) noise around a brightness that grows with `label` (20 for class 0, 235 for the last)."""
    base = 20 + 215 * label / max(nclass - 1, 1)
    noise = rng.integers(-12, 13, size=(height, width, channels))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def _labels(rng, nclass, n_per_class):
    """Each class n_per_class times, shuffled (the real files are not sorted by class)."""
    return rng.permutation(np.repeat(np.arange(nclass), n_per_class))


def _save_jpeg(path, array):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array.squeeze(2) if array.shape[2] == 1 else array).save(path, quality=90)


# ---------------------------------------------------------------------------------------------------
# torchvision layouts

def _write_idx(path, array, gz):
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    if gz:
        with gzip.open(path + ".gz", "wb") as f:
            f.write(data)
    else:
        with open(path, "wb") as f:
            f.write(data)


def write_mnist(root, n_train_per_class=4, n_test_per_class=2, kind="MNIST", gz=False, seed=0):
    """root/<kind>/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte (kind 'MNIST' or 'FashionMNIST')."""
    rng = np.random.default_rng(seed)
    raw = os.path.join(root, kind, "raw")
    os.makedirs(raw, exist_ok=True)
    for prefix, n in (("train", n_train_per_class), ("t10k", n_test_per_class)):
        labels = _labels(rng, 10, n)
        images = np.stack([class_image(rng, y, 10, 28, 28, 1)[:, :, 0] for y in labels])
        _write_idx(os.path.join(raw, f"{prefix}-images-idx3-ubyte"), images, gz)
        _write_idx(os.path.join(raw, f"{prefix}-labels-idx1-ubyte"), labels.astype(np.uint8), gz)
    return root


def _cifar_rows(rng, nclass, n_per_class):
    labels = _labels(rng, nclass, n_per_class)
    # A row is the R plane, then G, then B, each 32x32 row-major.
    rows = np.stack([class_image(rng, y, nclass, 32, 32, 3).transpose(2, 0, 1).reshape(-1) for y in labels])
    return rows.astype(np.uint8), [int(y) for y in labels]


def _pickle(path, obj):
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def write_cifar10(root, n_train_per_class=4, n_test_per_class=2, seed=0):
    """root/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}: the python pickle release."""
    rng = np.random.default_rng(seed)
    base = os.path.join(root, "cifar-10-batches-py")
    os.makedirs(base, exist_ok=True)
    rows, labels = _cifar_rows(rng, 10, n_train_per_class)
    chunks = np.array_split(np.arange(len(labels)), 5)
    for i, idx in enumerate(chunks, 1):
        _pickle(os.path.join(base, f"data_batch_{i}"),
                {"batch_label": f"training batch {i} of 5", "data": rows[idx],
                 "labels": [labels[j] for j in idx], "filenames": [f"img_{j}.png" for j in idx]})
    rows, labels = _cifar_rows(rng, 10, n_test_per_class)
    _pickle(os.path.join(base, "test_batch"), {"batch_label": "testing batch 1 of 1", "data": rows,
                                               "labels": labels, "filenames": [f"t_{j}.png" for j in range(len(rows))]})
    _pickle(os.path.join(base, "batches.meta"), {"label_names": CIFAR10_NAMES, "num_cases_per_batch": 10000,
                                                 "num_vis": 3072})
    return root


def write_cifar100(root, n_train_per_class=4, n_test_per_class=1, seed=0):
    """root/cifar-100-python/{train, test, meta}; the format has 100 fine classes (20 coarse)."""
    rng = np.random.default_rng(seed)
    base = os.path.join(root, "cifar-100-python")
    os.makedirs(base, exist_ok=True)
    for split, n in (("train", n_train_per_class), ("test", n_test_per_class)):
        rows, labels = _cifar_rows(rng, 100, n)
        _pickle(os.path.join(base, split), {"filenames": [f"{split}_{j}.png" for j in range(len(rows))],
                                            "batch_label": f"{split} batch", "fine_labels": labels,
                                            "coarse_labels": [y // 5 for y in labels], "data": rows})
    _pickle(os.path.join(base, "meta"), {"fine_label_names": [f"class_{c:03d}" for c in range(100)],
                                         "coarse_label_names": [f"super_{c:02d}" for c in range(20)]})
    return root


def write_svhn(root, n_train_per_class=4, n_test_per_class=2, seed=0):
    """root/SVHN/{train,test}_32x32.mat: X is 32x32x3xN uint8, y is Nx1 in 1..10 (10 is the digit 0)."""
    import scipy.io

    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, "SVHN"), exist_ok=True)
    for split, n in (("train", n_train_per_class), ("test", n_test_per_class)):
        digits = _labels(rng, 10, n)
        x = np.stack([class_image(rng, d, 10, 32, 32, 3) for d in digits], axis=3)
        y = np.where(digits == 0, 10, digits).astype(np.uint8).reshape(-1, 1)
        scipy.io.savemat(os.path.join(root, "SVHN", f"{split}_32x32.mat"), {"X": x, "y": y})
    return root


# ---------------------------------------------------------------------------------------------------
# Image-file layouts

def fake_wnids(nclass, start=0):
    """WordNet-looking ids that sort in index order."""
    return [f"n{90000000 + 1111 * (start + c):08d}" for c in range(nclass)]


def write_tinyimagenet(root, nclass=3, n_train_per_class=4, n_val_per_class=2, raw_val=True, image_size=64,
                       seed=0):
    """The unpacked tiny-imagenet-200 release: train/<wnid>/images/*.JPEG (+ _boxes.txt), val in the raw
    layout (val/images + val_annotations.txt) or, with raw_val=False, split into val/<wnid>/ folders."""
    rng = np.random.default_rng(seed)
    wnids = fake_wnids(nclass)
    with open(os.path.join(_mkdir(root), "wnids.txt"), "w") as f:
        f.write("".join(w + "\n" for w in rng.permutation(wnids)))
    with open(os.path.join(root, "words.txt"), "w") as f:
        f.write("".join(f"{w}\tthing {i}\n" for i, w in enumerate(wnids)))
    for c, w in enumerate(wnids):
        folder = os.path.join(root, "train", w)
        boxes = []
        for i in range(n_train_per_class):
            _save_jpeg(os.path.join(folder, "images", f"{w}_{i}.JPEG"),
                       class_image(rng, c, nclass, image_size, image_size))
            boxes.append(f"{w}_{i}.JPEG\t0\t0\t{image_size - 1}\t{image_size - 1}\n")
        with open(os.path.join(folder, f"{w}_boxes.txt"), "w") as f:
            f.write("".join(boxes))
    lines = []
    for k, c in enumerate(_labels(rng, nclass, n_val_per_class)):
        fname = f"val_{k}.JPEG"
        image = class_image(rng, c, nclass, image_size, image_size)
        if raw_val:
            _save_jpeg(os.path.join(root, "val", "images", fname), image)
            lines.append(f"{fname}\t{wnids[c]}\t3\t5\t{image_size - 7}\t{image_size - 9}\n")
        else:
            _save_jpeg(os.path.join(root, "val", wnids[c], fname), image)
    if raw_val:
        with open(os.path.join(root, "val", "val_annotations.txt"), "w") as f:
            f.write("".join(lines))
    _save_jpeg(os.path.join(root, "test", "images", "test_0.JPEG"), class_image(rng, 0, 1, image_size, image_size))
    return root


def _mkdir(path):
    os.makedirs(path, exist_ok=True)
    return path


def _write_imagenet_tree(root, wnids, n_train_per_class, n_val_per_class, image_sizes, seed, distractors):
    """root/train/<wnid>/<wnid>_<i>.JPEG and root/val/<wnid>/ILSVRC2012_val_<k>.JPEG, brightness by index."""
    rng = np.random.default_rng(seed)
    k = 0
    every = list(wnids) + fake_wnids(distractors, start=500)
    for c, w in enumerate(every):
        for i in range(n_train_per_class):
            width, height = image_sizes[(c + i) % len(image_sizes)]
            _save_jpeg(os.path.join(root, "train", w, f"{w}_{i}.JPEG"), class_image(rng, c, len(wnids), height, width))
        for _ in range(n_val_per_class):
            k += 1
            width, height = image_sizes[(c + k) % len(image_sizes)]
            _save_jpeg(os.path.join(root, "val", w, f"ILSVRC2012_val_{k:08d}.JPEG"),
                       class_image(rng, c, len(wnids), height, width))
    return root


def write_imagenet_subset(root, name, n_train_per_class=4, n_val_per_class=1, image_sizes=((150, 140), (140, 170)),
                          distractors=1, seed=0):
    """ImageNet layout (train/<wnid>/, val/<wnid>/) holding the 10 classes of subset `name` (e.g. 'imagenette'),
    class i (line i of data/classes/<name>.txt) the i-th brightest, plus `distractors` unrelated class folders.
    image_sizes are (width, height) pairs, not square, so resize + centre crop is exercised."""
    return _write_imagenet_tree(root, read_class_file(name), n_train_per_class, n_val_per_class, image_sizes, seed,
                                distractors)


def write_imagenet(root, nclass=10, phase=0, n_train_per_class=4, n_val_per_class=1,
                   image_sizes=((90, 75), (70, 96)), distractors=1, seed=0):
    """ImageNet layout holding class100.txt entries [nclass*phase, nclass*(phase+1)) (+ distractor folders)."""
    wnids = read_class_file("class100")[nclass * phase: nclass * (phase + 1)]
    return _write_imagenet_tree(root, wnids, n_train_per_class, n_val_per_class, image_sizes, seed, distractors)


def write_folder(root, nclass=3, gray=False, n_train_per_class=4, n_val_per_class=2, val_name="val",
                 image_sizes=((40, 36), (36, 44)), ext="png", seed=0):
    """A plain ImageFolder tree root/train/<class_c>/*.<ext>, root/<val_name>/<class_c>/*, plus a hidden file."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train_per_class), (val_name, n_val_per_class)):
        for c in range(nclass):
            folder = _mkdir(os.path.join(root, split, f"class_{c}"))
            for i in range(n):
                width, height = image_sizes[(c + i) % len(image_sizes)]
                image = class_image(rng, c, nclass, height, width, 1 if gray else 3)
                Image.fromarray(image[:, :, 0] if gray else image).save(os.path.join(folder, f"img_{i}.{ext}"))
            with open(os.path.join(folder, ".DS_Store"), "wb") as f:
                f.write(b"\0junk")
    return root


FIXTURES = {
    "mnist": lambda root: write_mnist(root, kind="MNIST"),
    "fashion": lambda root: write_mnist(root, kind="FashionMNIST", gz=True),
    "cifar10": write_cifar10,
    "cifar100": write_cifar100,
    "svhn": write_svhn,
    "tinyimagenet": write_tinyimagenet,
    **{n: (lambda root, n=n: write_imagenet_subset(root, n))
       for n in ("imagenette", "imagewoof", "imagemeow", "imagesquawk", "imagefruit", "imageyellow")},
    "imagenet": write_imagenet,
    "folder": write_folder,
    "digits": lambda root: str(root),  # bundled with scikit-learn: nothing to write
    "patches": lambda root: str(root),  # cut from scikit-image's bundled images: nothing to write
}


def write_fixture(name, root):
    """Write the default tiny fixture of dataset `name` under root; returns the data_dir to load it from."""
    return FIXTURES[name](str(root))


def build_model(net_type, nclass, channels, size, depth=3, width=1.0, norm_type="instance", cifar_layout=False):
    """A freshly initialised network of the registry by its constructor arguments (bad ones raise UserError)."""
    config = model_config(net_type, nclass, channels, size, depth, width, norm_type, cifar_layout)  # checks the name
    return MODELS[net_type](**config)


def class_counts(split, nclass):
    """Number of images of each class 0..nclass-1 in `split`, as a list of ints."""
    return torch.bincount(split.labels.cpu(), minlength=nclass).tolist()
