"""Per-class batches of real images, drawn from uint8 tensors kept on the run's device (or files, prefetched)."""
from concurrent.futures import ThreadPoolExecutor

import torch

from data.streams import KeyedGenerator
from utils import UserError


PREFETCH_THREADS = 4  # image decoding releases the GIL: a few threads keep up with a GPU step


def to_float(images):
    """uint8 [0,255] -> float32 [0,1]; float input passes through."""
    return images.float().div_(255) if images.dtype == torch.uint8 else images.float()


def gather(images, index, device):
    """Float [0,1] images at `index` on `device`, from a tensor (any device) or file-backed images."""
    if torch.is_tensor(images):
        return to_float(images[index.to(images.device)]).to(device, non_blocking=True)
    return to_float(images[index.cpu()]).to(device)


class ClassSampler:
    """Endless per-class streams of real images (the official data.py `ClassBatchSampler`).

    Each class is drawn without replacement within a pass over its images; the incomplete tail of a
    pass is dropped. Pass p of class c is a permutation keyed by (seed, c, p) (data/streams.py), so a class
    draws the same batches whichever classes share the sampler, and the stream positions (pass, position)
    are all a resumed run needs. `classes` (global ids, default all) are the classes this sampler draws;
    methods take their position in it (0 .. len(classes) - 1). In-memory images of those classes move to
    `device` once, and their indices and permutations live there too, so a batch never waits on a
    host-to-device copy. File-backed ones (ImageNet) are read batch by batch with host-side indices; the batch
    after class c's, class c + 1's (per class), or every class's next batch (all classes at once), is
    decoded in background threads while the current one is in use, without changing what any class draws.
    """

    def __init__(self, split, nclass, batch_size, device, seed=0, classes=None, prefetch=True):
        self.classes = list(range(nclass) if classes is None else classes)
        self.nclass, self.batch_size, self.device = len(self.classes), batch_size, device
        labels = split.labels.cpu()
        self.files = not torch.is_tensor(split.images)
        if self.files:
            self.images, self.index_device = split.images, torch.device("cpu")
        else:  # only this sampler's classes go to the device
            mine = torch.isin(labels, torch.tensor(self.classes))
            self.images, labels = split.images[mine].to(device), labels[mine]
            self.index_device = self.images.device
        self.class_indices = [torch.nonzero(labels == c).flatten().to(self.index_device) for c in self.classes]
        empty = [c for c, idx in zip(self.classes, self.class_indices) if len(idx) == 0]
        if empty:
            raise UserError(f"class {empty[0]} has no training images; check the dataset's files")
        self.sizes = [min(len(idx), batch_size) for idx in self.class_indices]
        self.groups = torch.arange(self.nclass, device=device).repeat_interleave(
            torch.tensor(self.sizes, device=device))
        self._generators = KeyedGenerator(seed, self.index_device)
        self._pass = [0] * self.nclass  # pass 0: none drawn yet
        self._pos = [0] * self.nclass
        self._perm = [None] * self.nclass
        self._ahead = {}
        self._pool = ThreadPoolExecutor(PREFETCH_THREADS) if self.files and prefetch else None

    def _permutation(self, c, npass):
        """Class c's order of pass `npass` (keyed: the same in any sampler and after a resume)."""
        n = len(self.class_indices[c])
        return torch.randperm(n, generator=self._generators("real", self.classes[c], npass), device=self.index_device)

    def _next(self, c):
        """(dataset positions of class c's next batch, the stream position after it), uncommitted."""
        idx, size = self.class_indices[c], self.sizes[c]
        npass, pos, perm = self._pass[c], self._pos[c], self._perm[c]
        if npass == 0 or pos + size > len(idx):
            npass, pos = npass + 1, 0
            perm = self._permutation(c, npass)
        return idx[perm[pos:pos + size]], (npass, pos + size, perm)

    def _commit(self, c, position):
        self._pass[c], self._pos[c], self._perm[c] = position

    def _next_indices(self, c):
        index, position = self._next(c)
        self._commit(c, position)
        return index

    def _take(self, c):
        """Class c's next batch as uint8/float host images of files: the prefetched one if there is one."""
        if c in self._ahead:
            position, pending = self._ahead.pop(c)
            self._commit(c, position)
            return pending.result()
        return self.images[self._next_indices(c)]

    def _prefetch(self, c):
        """Draw class c's next batch now and decode it in the background (files only); it counts as drawn
        once taken, so a checkpoint in between draws it again."""
        if self._pool is not None and c not in self._ahead:
            index, position = self._next(c)
            self._ahead[c] = (position, self._pool.submit(self.images.__getitem__, index))

    def sample(self, c):
        """The next batch of class c: float (B, C, H, W) in [0, 1] on the device."""
        if not self.files:
            return gather(self.images, self._next_indices(c), self.device)
        batch = self._take(c)
        self._prefetch((c + 1) % self.nclass)  # per_class asks for the classes in order
        return to_float(batch).to(self.device)

    def sample_all(self):
        """One batch per class, concatenated class by class, with the class (position) of every image.

        Files: every class's next batch is then drawn and decoded in the background, for the next call."""
        if self.files:
            real = torch.cat([to_float(self._take(c)) for c in range(self.nclass)]).to(self.device)
            for c in range(self.nclass):
                self._prefetch(c)
            return real, self.groups
        index = torch.cat([self._next_indices(c) for c in range(self.nclass)])
        return gather(self.images, index, self.device), self.groups

    def first(self, c, n):
        """The first n images of class c in dataset order, cycling when the class has fewer."""
        idx = self.class_indices[c]
        return gather(self.images, idx[torch.arange(n, device=self.index_device) % len(idx)], self.device)

    def state_dict(self):
        """{global class id: [pass, position]}: what a resumed run needs to draw the same batches, in a form that
        merges with other samplers' (another split of the classes over processes)."""
        return {"passes": {g: [self._pass[c], self._pos[c]] for c, g in enumerate(self.classes)}}

    def load_state_dict(self, state):
        """Take this sampler's classes' positions from a state (of any split of the classes)."""
        if "passes" not in state:
            raise UserError("the state's real-batch streams come from an earlier version, whose random draws "
                            "differ; finish that run with the version that started it, or start a new run")
        for c, g in enumerate(self.classes):
            npass, pos = state["passes"][g]
            self._pass[c], self._pos[c] = int(npass), int(pos)
            self._perm[c] = self._permutation(c, npass) if npass > 0 else None
        self._ahead = {}


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
