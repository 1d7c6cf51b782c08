"""Dataset loading: every dataset's facts in one table (DATASETS) and `load_dataset(name, root, ...)`.

Each loader reads the dataset's own on-disk format (MNIST idx, CIFAR pickles, SVHN .mat, ImageFolder trees,
Tiny-ImageNet's raw val layout) and returns uint8 images, unnormalised, as (N, C, H, W) tensors in memory;
ImageNet is streamed from its files through `ImageFiles` (REFERENCE.md 2.2). Normalisation constants are
REFERENCE.md 2.1; the ImageNet class lists (label = line index) are REFERENCE.md 2.5, in data/classes/.
"""
import gzip
import os
import pickle
import struct
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch
from PIL import Image

from utils import UserError

CLASS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "classes")
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")
DECODE_THREADS = min(8, os.cpu_count() or 1)

# Evaluation DSA strategies after CutMix removed `cutout` (REFERENCE.md 1.1.2): digits lose `flip`.
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
    eval_dsa: str          # DSA strategy of the evaluation recipe (REFERENCE.md 1.1.2)
    cifar_layout: bool     # ResNet/ResNetAP use their CIFAR stem
    imagenet_epochs: bool  # evaluation epochs come from the ipc table (REFERENCE.md 1.1.2)


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


def holdout(split, nclass, fraction, seed=0):
    """(rest, held-out): a seeded per-class fraction of `split`, at least one image of each class."""
    generator = torch.Generator().manual_seed(seed)
    labels = split.labels.cpu()
    keep, held = [], []
    for c in range(nclass):
        index = torch.nonzero(labels == c).flatten()
        index = index[torch.randperm(len(index), generator=generator)]
        n = max(1, round(fraction * len(index))) if len(index) > 1 else 0
        held.append(index[:n])
        keep.append(index[n:])
    return split.subset(torch.cat(keep).sort().values), split.subset(torch.cat(held).sort().values)


class ImageFiles:
    """Images read from disk on demand, resized (shorter side, bilinear) + centre-cropped to `size`, as uint8 CHW."""

    def __init__(self, paths, size, channels=3):
        self.paths = list(paths)
        self.size = size
        self.channels = channels

    def __len__(self):
        return len(self.paths)

    @property
    def shape(self):
        """(N, C, size, size), so code can read .shape[1:] like a tensor's."""
        return torch.Size((len(self.paths), self.channels, self.size, self.size))

    @property
    def dtype(self):
        return torch.uint8

    def __getitem__(self, index):
        if isinstance(index, slice):
            index = range(*index.indices(len(self)))
        elif isinstance(index, torch.Tensor) and index.dim() == 0:
            index = int(index)
        if isinstance(index, (int, np.integer)):
            i = int(index)
            if not -len(self) <= i < len(self):
                raise IndexError(f"index {i} out of range for {len(self)} images")
            return load_image(self.paths[i], self.size, self.channels)
        idx = [int(i) for i in (index.tolist() if isinstance(index, (torch.Tensor, np.ndarray)) else index)]
        return decode_images([self.paths[i] for i in idx], self.size, self.channels)

    def __repr__(self):
        return f"ImageFiles({len(self)} files, size={self.size}, channels={self.channels})"


# ---------------------------------------------------------------------------------------------------
# Image files

def _is_image(fname):
    return not fname.startswith(".") and fname.lower().endswith(IMG_EXTENSIONS)


def list_images(folder):
    """Image files under `folder`, recursively, in torchvision ImageFolder's order; hidden entries skipped."""
    walked = []
    for dirpath, dirnames, fnames in os.walk(folder, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        walked.append((dirpath, sorted(f for f in fnames if _is_image(f))))
    return [os.path.join(dirpath, f) for dirpath, fnames in sorted(walked) for f in fnames]


def list_classes(folder):
    """Sorted, non-hidden sub-folder names of `folder`."""
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def _to_mode(img, channels):
    """PIL image -> 'RGB' (channels 3) or 'L' (channels 1); 16/32-bit grayscale is scaled down to 8 bits."""
    if channels == 3:
        return img if img.mode == "RGB" else img.convert("RGB")
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        a = np.asarray(img).astype(np.int64)
        if img.mode != "I" or a.max() > 255:
            a = a >> 8
        return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), mode="L")
    return img if img.mode == "L" else img.convert("L")


def _resize_crop(img, size):
    """Resize(size) on the shorter side (bilinear) then CenterCrop(size), with torchvision's rounding."""
    w, h = img.size
    if (w, h) != (size, size):
        if w <= h:
            new_w, new_h = size, int(size * h / w)
        else:
            new_w, new_h = int(size * w / h), size
        if (new_w, new_h) != (w, h):
            img = img.resize((new_w, new_h), Image.BILINEAR)
        top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
        img = img.crop((left, top, left + size, top + size))
    return img


def load_image(path, size, channels=3):
    """One image file -> uint8 (channels, size, size): PIL load, Resize(size) shorter side, CenterCrop(size)."""
    try:
        with Image.open(path) as img:
            arr = np.asarray(_resize_crop(_to_mode(img, channels), size))
    except (OSError, ValueError, SyntaxError, struct.error, Image.DecompressionBombError) as e:
        raise UserError(f"cannot read image {path} ({type(e).__name__}: {e}); delete or replace the file")
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr.transpose(2, 0, 1).copy())


def decode_images(paths, size, channels=3):
    """Decode many image files into one uint8 (N, channels, size, size) tensor, with a few threads."""
    out = torch.empty((len(paths), channels, size, size), dtype=torch.uint8)

    def put(i):
        out[i] = load_image(paths[i], size, channels)

    if len(paths) < 16 or DECODE_THREADS == 1:
        for i in range(len(paths)):
            put(i)
    else:
        # PIL releases the GIL while decoding and resizing, so threads scale here.
        with ThreadPoolExecutor(DECODE_THREADS) as pool:
            list(pool.map(put, range(len(paths)), chunksize=64))
    return out


def _is_gray(path):
    try:
        with Image.open(path) as img:
            return img.mode in GRAY_MODES
    except (OSError, ValueError, SyntaxError, struct.error) as e:
        raise UserError(f"cannot read image {path} ({type(e).__name__}: {e}); delete or replace the file")


def _class_tree(split_dir, classes):
    """(paths, labels) of an ImageFolder-style split for `classes` in the given label order."""
    paths, labels = [], []
    for label, cls in enumerate(classes):
        folder = os.path.join(split_dir, cls)
        if not os.path.isdir(folder):
            raise UserError(f"class folder {cls} is missing: expected {folder}; check --data_dir or the dataset")
        files = list_images(folder)
        if not files:
            raise UserError(f"class folder {folder} has no images ({', '.join(IMG_EXTENSIONS)}); "
                            f"add images or remove the folder")
        paths += files
        labels += [label] * len(files)
    return paths, torch.tensor(labels, dtype=torch.int64)


def read_class_file(name):
    """Class wnids of data/classes/<name>.txt; the line index is the label (REFERENCE.md 2.5)."""
    with open(os.path.join(CLASS_DIR, f"{name}.txt")) as f:
        return [line.strip() for line in f if line.strip()]


def channel_stats(images, chunk=4096):
    """Per-channel mean and std (population) of uint8 images (N, C, H, W) as [0,1] pixels, rounded to 4 digits."""
    c = images.shape[1]
    s, s2, n = torch.zeros(c, dtype=torch.float64), torch.zeros(c, dtype=torch.float64), 0
    for start in range(0, len(images), chunk):
        x = images[start:start + chunk].double().div_(255).transpose(0, 1).reshape(c, -1)
        s += x.sum(1)
        s2 += (x * x).sum(1)
        n += x.shape[1]
    mean = s / max(n, 1)
    std = (s2 / max(n, 1) - mean * mean).clamp_min(0).sqrt()
    return tuple(round(float(v), 4) for v in mean), tuple(round(float(v), 4) for v in std)


# ---------------------------------------------------------------------------------------------------
# File formats

def _require(root, name, relpaths, hint):
    """Each relpath (or its alternatives, a tuple) must exist under root; else one UserError line with `hint`."""
    found = []
    for rel in relpaths:
        options = rel if isinstance(rel, tuple) else (rel,)
        hit = next((os.path.join(root, o) for o in options if os.path.isfile(os.path.join(root, o))), None)
        if hit is None:
            raise UserError(f"{name} not found under {root} (expected {os.path.join(root, options[0])} ...); {hint}")
        found.append(hit)
    return found


def read_idx(path):
    """Parse an idx file (MNIST format; gzip accepted) into a numpy array."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise UserError(f"cannot read {path} ({e}); delete it and pass --download to fetch it again")
    dtypes = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in dtypes:
        raise UserError(f"{path} is not an idx file (bad header); delete it and pass --download to fetch it again")
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    dtype = np.dtype(dtypes[data[2]])
    count = int(np.prod(dims))
    if len(data) < 4 + 4 * ndim + count * dtype.itemsize:
        raise UserError(f"{path} is truncated; delete it and pass --download to fetch it again")
    return np.frombuffer(data, dtype, count=count, offset=4 + 4 * ndim).reshape(dims)


class _NumpyUnpickler(pickle.Unpickler):
    """Unpickler that only builds numpy arrays (the CIFAR batches hold nothing else): no code execution."""
    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
               ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
               ("numpy", "ndarray"), ("numpy", "dtype"),
               ("_codecs", "encode")}  # how Python 3 writes bytes at protocol 2

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def read_pickle(path):
    """A CIFAR python batch (Python 2 pickle of a dict of numpy arrays and lists)."""
    try:
        with open(path, "rb") as f:
            obj = _NumpyUnpickler(f, encoding="latin1").load()
    except Exception as e:  # pickle raises many types for corrupt files
        raise UserError(f"cannot read {path} ({type(e).__name__}: {e}); delete it and pass --download again")
    if not isinstance(obj, dict):
        raise UserError(f"{path} is not a CIFAR batch; delete it and pass --download to fetch it again")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _cifar_batch(path, label_key):
    batch = read_pickle(path)
    if "data" not in batch or label_key not in batch:
        raise UserError(f"{path} has no '{label_key}' entry; it is not the expected CIFAR batch")
    data = np.asarray(batch["data"], dtype=np.uint8)
    labels = np.asarray(batch[label_key], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise UserError(f"{path} holds data of shape {data.shape}; expected (N, 3072): not a CIFAR batch")
    # Each row is the R plane, then G, then B, each 32x32 row-major: that is CHW already.
    return torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()), torch.from_numpy(labels)


def _names(meta_path, key):
    meta = read_pickle(meta_path)
    names = meta.get(key)
    if not names:
        raise UserError(f"{meta_path} has no '{key}'; delete it and pass --download to fetch it again")
    return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)


# ---------------------------------------------------------------------------------------------------
# Loaders: loader(name, root, size, nclass, phase, seed) -> (train Split, test Split, facts overriding the table)

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

    files = _require(root, name, [idx("train-images-idx3-ubyte"), idx("train-labels-idx1-ubyte"),
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


def load_cifar10(name, root, **_):
    """CIFAR-10 python batches under root/cifar-10-batches-py."""
    base = "cifar-10-batches-py"
    rels = [f"{base}/data_batch_{i}" for i in range(1, 6)] + [f"{base}/test_batch", f"{base}/batches.meta"]
    files = _require(root, name, rels, TORCHVISION_HINT)
    parts = [_cifar_batch(p, "labels") for p in files[:5]]
    train = Split(torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]))
    test = Split(*_cifar_batch(files[5], "labels"))
    return train, test, {"class_names": _names(files[6], "label_names")}


def load_cifar100(name, root, **_):
    """CIFAR-100 python files under root/cifar-100-python (fine labels)."""
    base = "cifar-100-python"
    files = _require(root, name, [f"{base}/train", f"{base}/test", f"{base}/meta"], TORCHVISION_HINT)
    train = Split(*_cifar_batch(files[0], "fine_labels"))
    test = Split(*_cifar_batch(files[1], "fine_labels"))
    return train, test, {"class_names": _names(files[2], "fine_label_names")}


def load_svhn(name, root, **_):
    """SVHN .mat files under root/SVHN; label 10 means digit 0 (as torchvision)."""
    import scipy.io  # optional dependency, only SVHN needs it

    files = _require(root, name, ["SVHN/train_32x32.mat", "SVHN/test_32x32.mat"], TORCHVISION_HINT)
    splits = []
    for path in files:
        try:
            mat = scipy.io.loadmat(path)
        except Exception as e:  # scipy raises ValueError/TypeError/OSError on bad files
            raise UserError(f"cannot read {path} ({type(e).__name__}: {e}); delete it and pass --download again")
        x, y = mat.get("X"), mat.get("y")
        if x is None or y is None or x.ndim != 4 or x.shape[3] != y.size:
            raise UserError(f"{path} lacks X (HxWxCxN) and y; delete it and pass --download to fetch it again")
        images = torch.from_numpy(np.ascontiguousarray(np.transpose(x, (3, 2, 0, 1)), dtype=np.uint8))
        labels = y.reshape(-1).astype(np.int64)
        labels[labels == 10] = 0
        splits.append(Split(images, torch.from_numpy(labels)))
    return splits[0], splits[1], {}


def load_tinyimagenet(name, root, size=None, **_):
    """Tiny-ImageNet: root = the unpacked tiny-imagenet-200 folder; val as class folders or the raw layout."""
    size = size or 64
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
    train_paths, train_labels = _class_tree(train_dir, classes)

    annotations = os.path.join(val_dir, "val_annotations.txt")
    if os.path.isfile(annotations):
        # Raw release: val/images/*.JPEG labelled by val_annotations.txt (filename, wnid, 4 bbox ints).
        index = {c: i for i, c in enumerate(classes)}
        items = []
        with open(annotations) as f:
            for n, line in enumerate(f, 1):
                fields = line.split()
                if not fields:
                    continue
                if len(fields) < 2 or fields[1] not in index:
                    raise UserError(f"{annotations} line {n} names class "
                                    f"{fields[1] if len(fields) > 1 else '?'} that train/ lacks; "
                                    f"use the matching train and val folders")
                path = os.path.join(val_dir, "images", fields[0])
                if not os.path.isfile(path):
                    raise UserError(f"{annotations} line {n} lists {path}, which is missing; re-unpack the dataset")
                items.append((index[fields[1]], fields[0], path))
        items.sort()  # class-major, then file name: the order ImageFolder gives a val split into folders
        val_paths = [p for _, _, p in items]
        val_labels = torch.tensor([lab for lab, _, _ in items], dtype=torch.int64)
    else:
        missing = [c for c in classes if not os.path.isdir(os.path.join(val_dir, c))]
        if missing:
            raise UserError(f"{val_dir} has neither val_annotations.txt nor a folder for class {missing[0]}; "
                            f"re-unpack the dataset")
        val_paths, val_labels = _class_tree(val_dir, classes)
    train = Split(decode_images(train_paths, size), train_labels)
    test = Split(decode_images(val_paths, size), val_labels)
    return train, test, {"nclass": len(classes), "class_names": tuple(classes), "size": size}


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
    train_paths, train_labels = _class_tree(train_dir, classes)
    val_paths, val_labels = _class_tree(val_dir, classes)
    train = Split(decode_images(train_paths, size), train_labels)
    test = Split(decode_images(val_paths, size), val_labels)
    return train, test, {"class_names": tuple(classes), "size": size}


def load_imagenet(name, root, size=None, nclass=None, phase=0, seed=0, **_):
    """ImageNet-10/100: a slice of class100.txt (seed 0) or of a seeded permutation; streamed from files."""
    size = size or 224
    nclass = 10 if nclass is None else nclass
    if nclass not in (10, 100):
        raise UserError(f"imagenet supports --nclass 10 or 100, not {nclass}")
    train_dir, val_dir = _imagenet_dirs(name, root)
    p = max(0, phase or 0)  # REFERENCE.md 9: phase -1 (the reference default) means slice 0
    if not seed:
        pool = read_class_file("class100")
    else:
        # REFERENCE.md 2.2 `find_subclasses` with dseed != 0: permute the sorted class folders.
        folders = list_classes(train_dir)
        pool = [folders[i] for i in np.random.RandomState(seed).permutation(len(folders))]
    if nclass * (p + 1) > len(pool):
        raise UserError(f"--phase {phase} with --nclass {nclass} needs classes {nclass * p}..{nclass * (p + 1) - 1} "
                        f"but only {len(pool)} are available; use --phase below {len(pool) // nclass}")
    classes = pool[nclass * p: nclass * (p + 1)]
    train_paths, train_labels = _class_tree(train_dir, classes)
    val_paths, val_labels = _class_tree(val_dir, classes)
    train = Split(ImageFiles(train_paths, size), train_labels)
    test = Split(ImageFiles(val_paths, size), val_labels)
    return train, test, {"nclass": nclass, "class_names": tuple(classes), "size": size}


def load_folder(name, root, size=None, **_):
    """Any ImageFolder tree root/train/<class>/*, root/val (or test)/<class>/*; gray if every train image is."""
    size = size or 32
    train_dir = os.path.join(root, "train")
    val_dir = next((os.path.join(root, s) for s in ("val", "test") if os.path.isdir(os.path.join(root, s))), None)
    if not os.path.isdir(train_dir) or val_dir is None:
        raise UserError(f"folder dataset not found under {root} (expected {train_dir}/<class>/ and "
                        f"{os.path.join(root, 'val')}/<class>/ or test/); pass --data_dir pointing at such a tree")
    classes = list_classes(train_dir)
    if not classes:
        raise UserError(f"{train_dir} has no class folders; put each class's images in train/<class>/")
    val_classes = list_classes(val_dir)
    if val_classes != classes:
        only_train = sorted(set(classes) - set(val_classes))
        only_val = sorted(set(val_classes) - set(classes))
        diff = (f"only in train: {only_train[:3]}" if only_train
                else f"only in {os.path.basename(val_dir)}: {only_val[:3]}")
        raise UserError(f"{train_dir} and {val_dir} have different class folders ({diff}); give both the same classes")
    train_paths, train_labels = _class_tree(train_dir, classes)
    val_paths, val_labels = _class_tree(val_dir, classes)
    channels = 1 if all(_is_gray(p) for p in train_paths) else 3
    train_images = decode_images(train_paths, size, channels)
    mean, std = channel_stats(train_images)
    std = tuple(max(s, 1e-3) for s in std)  # a constant-colour set must not divide by zero
    train = Split(train_images, train_labels)
    test = Split(decode_images(val_paths, size, channels), val_labels)
    return train, test, {"nclass": len(classes), "channels": channels, "size": size, "mean": mean, "std": std,
                         "class_names": tuple(classes)}


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


# ---------------------------------------------------------------------------------------------------
# The table

@dataclass(frozen=True)
class DatasetSpec:
    """Facts about one dataset (None: read from the files) and the function that reads it."""
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


def _subset():
    return DatasetSpec(load_imagenet_subset, 10, 3, 128, *IMAGENET_STATS, imagenet_epochs=True, resizable=True)


DATASETS = {
    "mnist": DatasetSpec(load_mnist, 10, 1, 28, *MNIST_STATS, DIGIT_NAMES, DSA_NO_FLIP,
                         fetch=torchvision_fetcher("MNIST")),
    "fashion": DatasetSpec(load_fashion, 10, 1, 28, *FASHION_STATS, FASHION_NAMES,
                           fetch=torchvision_fetcher("FashionMNIST")),
    "cifar10": DatasetSpec(load_cifar10, 10, 3, 32, *CIFAR_STATS, cifar_layout=True,
                           fetch=torchvision_fetcher("CIFAR10")),
    "cifar100": DatasetSpec(load_cifar100, 100, 3, 32, *CIFAR_STATS, cifar_layout=True,
                            fetch=torchvision_fetcher("CIFAR100")),
    "svhn": DatasetSpec(load_svhn, 10, 3, 32, *SVHN_STATS, DIGIT_NAMES, DSA_NO_FLIP,
                        fetch=torchvision_fetcher("SVHN", subdir="SVHN", split_arg=True)),
    "tinyimagenet": DatasetSpec(load_tinyimagenet, 200, 3, 64, *IMAGENET_STATS, resizable=True),
    **{n: _subset() for n in ("imagenette", "imagewoof", "imagemeow", "imagesquawk", "imagefruit", "imageyellow")},
    "imagenet": DatasetSpec(load_imagenet, None, 3, 224, *IMAGENET_STATS, imagenet_epochs=True, resizable=True),
    "folder": DatasetSpec(load_folder, None, None, None, None, None, resizable=True),
    # NOTE: digits are orientation-sensitive like MNIST/SVHN, so their evaluation DSA has no flip.
    "digits": DatasetSpec(load_digits, 10, 1, DIGITS_SIZE, *DIGITS_STATS, DIGIT_NAMES, DSA_NO_FLIP,
                          needs_root=False),
}


def dataset_names():
    """Every name load_dataset accepts."""
    return list(DATASETS)


def load_dataset(name, root, download=False, size=None, nclass=None, phase=0, seed=0):
    """Load `name` from `root` -> (train Split, test Split, DatasetInfo); uint8 images, unnormalised.

    size: output size for the image-file datasets (folder default 32; tinyimagenet/subsets/imagenet keep their
    table size when None); the tensor datasets only accept their own size. nclass, phase, seed: the ImageNet
    class slice (seed = the reference's dseed; 0 uses class100.txt); ignored by the other datasets.
    """
    if name not in DATASETS:
        raise UserError(f"unknown dataset '{name}'; choose one of: {', '.join(DATASETS)}")
    spec = DATASETS[name]
    if size is not None and not spec.resizable and size != spec.size:
        raise UserError(f"{name} images are {spec.size}x{spec.size}; --size {size} applies only to image-folder "
                        f"datasets: drop it")
    if spec.needs_root:
        if not root:
            raise UserError(f"{name} needs a data folder; pass --data_dir")
        root = os.path.expanduser(str(root))
        if download and spec.fetch is not None:
            spec.fetch(name, root)
    train, test, facts = spec.loader(name, root, size=size, nclass=nclass, phase=phase, seed=seed)
    fields = dict(nclass=spec.nclass, channels=spec.channels, size=spec.size, mean=spec.mean, std=spec.std,
                  class_names=spec.class_names or tuple(str(i) for i in range(spec.nclass or 0)))
    fields.update(facts)
    info = DatasetInfo(name=name, eval_dsa=spec.eval_dsa, cifar_layout=spec.cifar_layout,
                       imagenet_epochs=spec.imagenet_epochs, **fields)
    for split_name, split in (("train", train), ("test", test)):
        _check_split(info, split_name, split, root)
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
