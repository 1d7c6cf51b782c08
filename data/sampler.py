"""Per-class batches of real images, drawn from uint8 tensors kept on the run's device (or files, prefetched)."""
from concurrent.futures import ThreadPoolExecutor

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
    pass is dropped. In-memory images move to `device` once, and their indices and permutations live
    there too, so a batch never waits on a host-to-device copy. File-backed ones (ImageNet) are read
    batch by batch with host-side indices: each class then draws from a random stream of its own (seeded
    from the global stream when the sampler is made), so the batch after class c's, class c + 1's, is
    decoded in a background thread while c's is in use, without changing what any class draws.
    """

    def __init__(self, split, nclass, batch_size, device, prefetch=True):
        self.images = split.images.to(device) if torch.is_tensor(split.images) else split.images
        self.index_device = self.images.device if torch.is_tensor(self.images) else torch.device("cpu")
        labels = split.labels.cpu()
        self.nclass, self.batch_size, self.device = nclass, batch_size, device
        self.class_indices = [torch.nonzero(labels == c).flatten().to(self.index_device) for c in range(nclass)]
        empty = [c for c, idx in enumerate(self.class_indices) if len(idx) == 0]
        if empty:
            raise UserError(f"class {empty[0]} has no training images; check the dataset's files")
        self.sizes = [min(len(idx), batch_size) for idx in self.class_indices]
        self.groups = torch.arange(nclass, device=device).repeat_interleave(torch.tensor(self.sizes, device=device))
        self._perm = [None] * nclass
        self._pos = [0] * nclass
        self.files = not torch.is_tensor(self.images)
        self._streams, self._ahead, self._pool = None, {}, None
        if self.files:
            base = int(torch.randint(2**62, ()))  # one global draw: the per-class streams follow the run's seed
            self._streams = [torch.Generator().manual_seed(base + c) for c in range(nclass)]
            self._pool = ThreadPoolExecutor(1) if prefetch else None

    def _next_indices(self, c):
        """Dataset positions of class c's next batch (positions are tracked on the host: no device read)."""
        idx, size = self.class_indices[c], self.sizes[c]
        if self._perm[c] is None or self._pos[c] + size > len(idx):
            stream = self._streams[c] if self.files else None
            self._perm[c], self._pos[c] = torch.randperm(len(idx), generator=stream, device=self.index_device), 0
        start = self._pos[c]
        self._pos[c] += size
        return idx[self._perm[c][start:start + size]]

    def _take(self, c):
        """Class c's next batch as uint8/float host images of files: the prefetched one if there is one."""
        index, pending = self._ahead.pop(c, (None, None))
        if index is None:
            index = self._next_indices(c)
        return pending.result() if pending is not None else self.images[index]

    def _prefetch(self, c):
        """Draw class c's next batch now and decode it in the background (files only)."""
        if self._pool is not None and c not in self._ahead:
            index = self._next_indices(c)
            self._ahead[c] = (index, self._pool.submit(self.images.__getitem__, index))

    def sample(self, c):
        """The next batch of class c: float (B, C, H, W) in [0, 1] on the device."""
        if not self.files:
            return gather(self.images, self._next_indices(c), self.device)
        batch = self._take(c)
        self._prefetch((c + 1) % self.nclass)  # per_class asks for the classes in order
        return to_float(batch).to(self.device)

    def sample_all(self):
        """One batch per class, concatenated class by class, with the class id of every image."""
        if self.files:
            return torch.cat([to_float(self._take(c)) for c in range(self.nclass)]).to(self.device), self.groups
        index = torch.cat([self._next_indices(c) for c in range(self.nclass)])
        return gather(self.images, index, self.device), self.groups

    def first(self, c, n):
        """The first n images of class c in dataset order, cycling when the class has fewer."""
        idx = self.class_indices[c]
        return gather(self.images, idx[torch.arange(n, device=self.index_device) % len(idx)], self.device)

    def state_dict(self):
        """Stream positions, so a resumed run draws the same batches (files: also the per-class streams and the
        batches drawn ahead, which a resumed run decodes again)."""
        state = {"perm": [None if p is None else p.cpu() for p in self._perm], "pos": self._pos}
        if self.files:
            state["streams"] = [g.get_state() for g in self._streams]
            state["ahead"] = {c: index.cpu() for c, (index, _) in self._ahead.items()}
        return state

    def load_state_dict(self, state):
        self._perm = [None if p is None else p.to(self.index_device) for p in state["perm"]]
        self._pos = list(state["pos"])
        if self.files and "streams" in state:  # a state.pt from before 2026-11-25 keeps the fresh streams
            for g, s in zip(self._streams, state["streams"]):
                g.set_state(s)
            self._ahead = {int(c): (index, None) for c, index in state["ahead"].items()}


def epoch_batches(n, batch_size, device=None):
    """Index batches of one random pass over n items (last batch partial), drawn on `device` (default: CPU)."""
    perm = torch.randperm(n, device=device)
    for start in range(0, n, batch_size):
        yield perm[start:start + batch_size]


def require_per_class(labels, nclass, needed, class_names, what, fix):
    """Refuse when some class has fewer than `needed` images (real images would repeat), naming it and the fix."""
    counts = torch.bincount(labels.cpu(), minlength=nclass).tolist()
    smallest = min(range(nclass), key=lambda c: counts[c])
    if counts[smallest] < needed:
        name = class_names[smallest] if class_names else smallest
        raise UserError(f"{what} needs {needed} real images per class, but class {name} has only "
                        f"{counts[smallest]} training images; {fix}")
