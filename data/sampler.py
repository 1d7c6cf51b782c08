"""Per-class batches of real images, drawn from uint8 tensors kept on the run's device."""
import torch

from utils import UserError


def to_float(images):
    """uint8 [0,255] -> float32 [0,1]; float input passes through."""
    return images.float().div_(255) if images.dtype == torch.uint8 else images.float()


def gather(images, index, device):
    """Float [0,1] images at `index` on `device`, from a tensor (any device) or file-backed images."""
    if torch.is_tensor(images):
        return to_float(images[index.to(images.device)]).to(device, non_blocking=True)
    return to_float(images[index.cpu()]).to(device)


class ClassSampler:
    """Endless per-class streams of real images (REFERENCE 2.3, ClassBatchSampler).

    Each class is drawn without replacement within a pass over its images; the incomplete tail of a
    pass is dropped. In-memory images move to `device` once; file-backed ones (ImageNet) are read
    batch by batch.
    """

    def __init__(self, split, nclass, batch_size, device):
        self.images = split.images.to(device) if torch.is_tensor(split.images) else split.images
        self.labels = split.labels.cpu()
        self.nclass, self.batch_size, self.device = nclass, batch_size, device
        self.class_indices = [torch.nonzero(self.labels == c).flatten() for c in range(nclass)]
        empty = [c for c, idx in enumerate(self.class_indices) if len(idx) == 0]
        if empty:
            raise UserError(f"class {empty[0]} has no training images; check the dataset's files")
        self._perm = [None] * nclass
        self._pos = [0] * nclass

    def _next_indices(self, c):
        """Dataset positions of class c's next batch."""
        idx = self.class_indices[c]
        size = min(len(idx), self.batch_size)
        if self._perm[c] is None or self._pos[c] + size > len(idx):
            self._perm[c], self._pos[c] = torch.randperm(len(idx)), 0
        start = self._pos[c]
        self._pos[c] += size
        return idx[self._perm[c][start:start + size]]

    def sample(self, c):
        """The next batch of class c: float (B, C, H, W) in [0, 1] on the device."""
        return gather(self.images, self._next_indices(c), self.device)

    def sample_all(self):
        """One batch per class, concatenated class by class, with the class id of every image."""
        index = [self._next_indices(c) for c in range(self.nclass)]
        groups = torch.cat([torch.full((len(i),), c) for c, i in enumerate(index)])
        return gather(self.images, torch.cat(index), self.device), groups.to(self.device)

    def first(self, c, n):
        """The first n images of class c in dataset order, cycling when the class has fewer."""
        idx = self.class_indices[c]
        return gather(self.images, idx[torch.arange(n) % len(idx)], self.device)

    def state_dict(self):
        """Stream positions, so a resumed run draws the same batches."""
        return {"perm": self._perm, "pos": self._pos}

    def load_state_dict(self, state):
        self._perm, self._pos = list(state["perm"]), list(state["pos"])


def epoch_batches(n, batch_size, device=None):
    """Index batches of one random pass over n items (last batch partial)."""
    perm = torch.randperm(n)
    for start in range(0, n, batch_size):
        idx = perm[start:start + batch_size]
        yield idx if device is None else idx.to(device)


def require_per_class(labels, nclass, needed, class_names, what, fix):
    """Refuse when some class has fewer than `needed` images (real images would repeat), naming it and the fix."""
    counts = torch.bincount(labels.cpu(), minlength=nclass).tolist()
    smallest = min(range(nclass), key=lambda c: counts[c])
    if counts[smallest] < needed:
        name = class_names[smallest] if class_names else smallest
        raise UserError(f"{what} needs {needed} real images per class, but class {name} has only "
                        f"{counts[smallest]} training images; {fix}")
