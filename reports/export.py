"""Export condensed sets for other tools: an ImageFolder tree of PNGs and a tensor file DD-Ranking reads.

    EXPORT/export.json                     which sets the folder holds (marks it as ours: refilled, never foreign)
    EXPORT/<set>/images/<class>/00000.png  the decoded images, one folder per class (torchvision's ImageFolder)
    EXPORT/<set>/images/metadata.csv       file_name, label, class_name of every image (the `datasets` ImageFolder
                                           loader takes its labels from it, reports/cards.py)
    EXPORT/<set>/tensors.pt                {"image_tensor", "hard_labels", "images", "class_names", "mean", "std"
                                            [, "soft_labels"]}, read with torch.load(weights_only=True)
    EXPORT/<set>/README.md                 the Hub's dataset card, when the caller gives one

`image_tensor` is what DD-Ranking's compute_metrics(image_tensor=..., hard_labels=...) takes: (nclass x m, C, H, W)
float32, class-major, normalised with the dataset's mean and std as its own dataset transforms normalise real
images (m = ipc x factor^2 decoded images per class); `images` holds the same images as [0, 1] pixels. Class
folders carry the class names; where sorting those names (ImageFolder's class order) would reorder the classes,
each gets its index as a prefix (003_name), so ImageFolder's labels are always ours.
"""
import os
import re
import shutil
import tempfile

import torch
from PIL import Image

from data.augment import normalize
from reports.cards import metadata_csv
from utils import TEMP_PREFIX, UserError, atomic_save, atomic_write_json, atomic_write_text, check_output_dir, read_json

MANIFEST = "export.json"
FORMAT = "dance-export/1"


def check_export_dir(path):
    """Refuse, before any work, an --export folder that cannot be written or is a non-empty folder not ours."""
    check_output_dir(path, "--export")
    if os.path.isdir(path) and os.listdir(path) and not os.path.isfile(os.path.join(path, MANIFEST)):
        raise UserError(f"--export {path} is a non-empty folder that evaluate.py did not export to; pass a new or "
                        f"empty folder")


def class_folders(class_names):
    """Folder names, one per class, whose sorted order is the class order (what ImageFolder's labels follow)."""
    names = [re.sub(r"[^\w.+-]+", "_", str(n)).strip("._") or "class" for n in class_names]
    if sorted(names) == names and len(set(names)) == len(names):
        return names
    width = len(str(len(names) - 1))
    return [f"{i:0{width}d}_{n}" for i, n in enumerate(names)]


def export_name(set_name):
    """A folder name for a set: its file's folder and stem (results/condense/run/data_200.pt -> run_data_200)."""
    if set_name.endswith(".pt"):
        folder = os.path.basename(os.path.dirname(os.path.abspath(set_name)))
        set_name = f"{folder}_{os.path.splitext(os.path.basename(set_name))[0]}"
    return re.sub(r"[^\w.+-]+", "_", set_name).strip("._")


def _write_set(root, images, labels, info, soft_labels):
    """The PNG tree (with its metadata.csv) and tensor file of one set, into the (new, empty) folder `root`."""
    names = [str(n) for n in (info.class_names or range(info.nclass))]
    folders = class_folders(names)
    pixels = images.detach().float().cpu().clamp(0, 1)
    labels = labels.detach().long().cpu()
    counts, rows = [0] * info.nclass, []
    for image, label in zip(pixels, labels.tolist()):
        folder = os.path.join(root, "images", folders[label])
        os.makedirs(folder, exist_ok=True)
        array = image.mul(255).round().byte().permute(1, 2, 0).numpy()
        file_name = f"{counts[label]:05d}.png"
        Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(os.path.join(folder, file_name))
        rows.append((f"{folders[label]}/{file_name}", label, names[label]))  # '/' on every OS, as `datasets` reads
        counts[label] += 1
    atomic_write_text(metadata_csv(rows), os.path.join(root, "images", "metadata.csv"))
    tensors = {"image_tensor": normalize(pixels, info.mean, info.std), "hard_labels": labels, "images": pixels,
               "class_names": names, "mean": [float(m) for m in info.mean], "std": [float(s) for s in info.std]}
    if soft_labels is not None:
        tensors["soft_labels"] = soft_labels.detach().float().cpu()
    atomic_save(tensors, os.path.join(root, "tensors.pt"))
    return {"images": len(labels), "per_class": counts, "class_folders": folders}


def export_set(folder, name, images, labels, info, soft_labels=None, card=None):
    """Write one set under folder/name, replacing an earlier export of that name (export_sets only reuses a name for
    the same source set); returns its manifest entry. `card(folder/name, entry)`, when given, is the text of its
    README.md (the dataset card).

    The set is written into a temp folder beside it and renamed into place, so folder/name is the old export or the
    whole new one; only a kill between the two renames leaves the old one aside as a temp folder.
    """
    os.makedirs(folder, exist_ok=True)
    target = os.path.join(folder, name)
    tmp = tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{name}_", dir=folder)
    try:
        entry = _write_set(tmp, images, labels, info, soft_labels)
        if card is not None:
            atomic_write_text(card(target, entry), os.path.join(tmp, "README.md"))
        old = None
        if os.path.exists(target):
            old = tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}old_{name}_", dir=folder)
            os.replace(target, os.path.join(old, name))
        os.replace(tmp, target)
        tmp = None
        if old is not None:
            shutil.rmtree(old)
    except OSError as e:
        raise UserError(f"could not write the export {target}: {e.strerror or e}; check the folder's permissions and "
                        f"free space") from None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return entry


def export_sets(folder, sets, info):
    """Export every (name, images, labels, soft_labels or None, source, card or None) in `sets` (card: see
    export_set); returns the folders written.

    Stale temp folders of a killed export are removed first; export.json lists every set the folder holds. A set
    exported again replaces its own earlier export; another set whose folder name would be the same gets the next
    free one (name_2, name_3, ...), so no export ever replaces another set's.
    """
    os.makedirs(folder, exist_ok=True)
    for leftover in os.listdir(folder):
        if leftover.startswith(TEMP_PREFIX):
            shutil.rmtree(os.path.join(folder, leftover), ignore_errors=True)
    manifest = read_json(os.path.join(folder, MANIFEST)) or {"format": FORMAT, "sets": {}}
    written = []
    taken = set()
    for set_name, images, labels, soft_labels, source, card in sets:
        source = os.path.abspath(source) if str(source).endswith(".pt") else source
        name = base = export_name(set_name)
        k = 1
        while name in taken or manifest["sets"].get(name, {}).get("source", source) != source:
            k += 1  # another set's export by that name is kept: this one gets the next free name
            name = f"{base}_{k}"
        taken.add(name)
        entry = export_set(folder, name, images, labels, info, soft_labels, card)
        manifest["sets"][name] = {"source": source, "dataset": info.name, "soft_labels": soft_labels is not None,
                                  **entry}
        written.append(os.path.join(folder, name))
    atomic_write_json(manifest, os.path.join(folder, MANIFEST))
    return written



@torch.no_grad()
def teacher_soft_labels(teacher, images, mean, std, device, batch=256):
    """The teacher's logits on each (unaugmented, normalised) image: DD-Ranking's soft_labels for one label each."""
    return torch.cat([teacher(normalize(images[i:i + batch].to(device).float(), mean, std)).float().cpu()
                      for i in range(0, len(images), batch)])
