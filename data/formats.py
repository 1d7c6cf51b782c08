"""Readers of the on-disk dataset formats: MNIST idx, CIFAR pickles, SVHN .mat, image files and ImageFolder trees.

Each reader returns numpy arrays or uint8 tensors and turns a missing, corrupt or foreign file into one UserError
line; composing them into splits is data/datasets.py's job. The ImageNet class lists (label = line index) are
the official misc/class*.txt, copied to data/classes/.
"""
import gzip
import os
import pickle
import struct
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from PIL import Image

from utils import UserError

CLASS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "classes")
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")
DECODE_THREADS = min(8, os.cpu_count() or 1)


def require(root, name, relpaths, hint):
    """Each relpath (or its alternatives, a tuple) must exist under root; else one UserError line with `hint`."""
    found = []
    for rel in relpaths:
        options = rel if isinstance(rel, tuple) else (rel,)
        hit = next((os.path.join(root, o) for o in options if os.path.isfile(os.path.join(root, o))), None)
        if hit is None:
            raise UserError(f"{name} not found under {root} (expected {os.path.join(root, options[0])} ...); {hint}")
        found.append(hit)
    return found


# ---------------------------------------------------------------------------------------------------
# MNIST idx, CIFAR pickles, SVHN .mat

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


def read_cifar_batch(path, label_key):
    """(uint8 images (N, 3, 32, 32), int64 labels (N,)) of one CIFAR batch, labels under `label_key`."""
    batch = read_pickle(path)
    if "data" not in batch or label_key not in batch:
        raise UserError(f"{path} has no '{label_key}' entry; it is not the expected CIFAR batch")
    data = np.asarray(batch["data"], dtype=np.uint8)
    labels = np.asarray(batch[label_key], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise UserError(f"{path} holds data of shape {data.shape}; expected (N, 3072): not a CIFAR batch")
    # Each row is the R plane, then G, then B, each 32x32 row-major: that is CHW already.
    return torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()), torch.from_numpy(labels)


def read_cifar_names(meta_path, key):
    """The class names listed under `key` in a CIFAR meta file."""
    meta = read_pickle(meta_path)
    names = meta.get(key)
    if not names:
        raise UserError(f"{meta_path} has no '{key}'; delete it and pass --download to fetch it again")
    return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)


def read_svhn_mat(path):
    """(uint8 images (N, 3, 32, 32), int64 labels (N,)) of an SVHN .mat file; label 10 is digit 0 (as torchvision)."""
    import scipy.io  # optional dependency, only SVHN needs it

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
    return images, torch.from_numpy(labels)


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


def is_gray(path):
    """Whether the image file is grayscale; reads the header only (PIL opens lazily), no pixels decoded."""
    try:
        with Image.open(path) as img:
            return img.mode in GRAY_MODES
    except (OSError, ValueError, SyntaxError, struct.error) as e:
        raise UserError(f"cannot read image {path} ({type(e).__name__}: {e}); delete or replace the file")


def class_dirs(split_dir, classes):
    """The folder of each of `classes` under `split_dir`; a missing one is a UserError naming it."""
    folders = [os.path.join(split_dir, cls) for cls in classes]
    for cls, folder in zip(classes, folders):
        if not os.path.isdir(folder):
            raise UserError(f"class folder {cls} is missing: expected {folder}; check --data_dir or the dataset")
    return folders


def class_tree(split_dir, classes):
    """(paths, labels) of an ImageFolder-style split for `classes` in the given label order."""
    paths, labels = [], []
    for label, folder in enumerate(class_dirs(split_dir, classes)):
        files = list_images(folder)
        if not files:
            raise UserError(f"class folder {folder} has no images ({', '.join(IMG_EXTENSIONS)}); "
                            f"add images or remove the folder")
        paths += files
        labels += [label] * len(files)
    return paths, torch.tensor(labels, dtype=torch.int64)


def read_val_annotations(annotations, images_dir, classes):
    """(paths, labels) of Tiny-ImageNet's raw val split: `annotations` lines are filename, wnid, 4 bbox ints."""
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
            path = os.path.join(images_dir, fields[0])
            if not os.path.isfile(path):
                raise UserError(f"{annotations} line {n} lists {path}, which is missing; re-unpack the dataset")
            items.append((index[fields[1]], fields[0], path))
    items.sort()  # class-major, then file name: the order ImageFolder gives a val split into folders
    return [p for _, _, p in items], torch.tensor([lab for lab, _, _ in items], dtype=torch.int64)


def read_class_file(name):
    """Class wnids of data/classes/<name>.txt; the line index is the label (as the official misc/*.txt)."""
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
