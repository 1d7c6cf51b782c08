"""Several processes under torchrun: who this process is, what it owns, and gathering what the others found.

`torchrun --nproc_per_node N script.py ...` sets RANK, WORLD_SIZE and LOCAL_RANK; without them (a plain
`python script.py`) the world is this one process and nothing here talks to anyone. Work is dealt out
round robin (item i to rank i mod N), so an item's owner is fixed by its index alone. Rank 0 alone writes
shared files (manifests, logs, results); files that belong to one item (an expert's checkpoints) are
written by the rank that owns it, so the output folder must be one every rank sees (one machine, or a
shared filesystem across nodes).
"""
import os
from contextlib import contextmanager

import torch
import torch.distributed as dist

from utils import UserError


class World:
    """This process's place among the torchrun processes: rank, size, and the device it drives."""

    def __init__(self, rank=0, size=1, local_rank=0, control=None):
        self.rank, self.size, self.local_rank = rank, size, local_rank
        self.control = control  # a gloo group for host-side objects and flags (None: the default group)

    @property
    def main(self):
        """True on the one process that writes shared files and prints."""
        return self.rank == 0

    def owned(self, items):
        """The items this rank works on: item i of `items` goes to rank i mod size."""
        return list(items)[self.rank::self.size]

    def gather(self, obj):
        """Every rank's `obj` (picklable), in rank order, on every rank; [obj] in a one-process world."""
        if self.size == 1:
            return [obj]
        out = [None] * self.size
        dist.all_gather_object(out, obj, group=self.control)
        return out

    def any(self, flag):
        """True on every rank when `flag` is true on some rank (host values only: no device is read)."""
        if self.size == 1:
            return bool(flag)
        t = torch.tensor([1 if flag else 0])
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.control)
        return bool(t.item())

    def class_range(self, nclass, chunk=1):
        """This rank's contiguous classes [first, end): blocks of `chunk` classes (0: classes one by one) dealt out
        evenly, so a block, the unit a network pass sees, never straddles two ranks."""
        chunk = chunk or 1
        blocks = -(-nclass // chunk)
        if blocks < self.size:
            fix = f"start at most {blocks} process{'es' if blocks > 1 else ''} (torchrun --nproc_per_node {blocks})" + (
                f" or lower --class_chunk (1 allows {nclass})" if chunk > 1 else "")
            raise UserError(f"{self.size} processes need at least {self.size} blocks of {chunk} class(es), and "
                            f"{nclass} classes make {blocks}: {fix}")
        first, end = self.rank * blocks // self.size, (self.rank + 1) * blocks // self.size
        return first * chunk, min(end * chunk, nclass)

    def barrier(self):
        if self.size > 1:
            dist.barrier()


def launched():
    """True when torchrun (or another launcher setting WORLD_SIZE > 1) started this process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def start_world(device):
    """Join the torchrun processes (gloo on the CPU, NCCL on CUDA, one GPU per LOCAL_RANK); returns (World,
    this rank's device). Without torchrun: a one-process World and `device` unchanged."""
    if not launched():
        return World(), device
    rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise UserError(f"LOCAL_RANK {local_rank} has no GPU ({torch.cuda.device_count()} visible); start at most "
                            f"{torch.cuda.device_count()} processes per node (--nproc_per_node)")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    elif device.type != "cpu":
        raise UserError(f"torchrun with --device {device.type} is not supported; use cuda or cpu")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    control = dist.new_group(backend="gloo") if device.type == "cuda" else None
    return World(rank, size, local_rank, control), device


def end_world(world, clean=True):
    """Leave the process group: after a last barrier when `clean` (no rank exits while another still gathers);
    at once after an error, which must not wait for ranks that will never arrive."""
    if world.size > 1 and dist.is_initialized():
        if clean:
            dist.barrier()
        dist.destroy_process_group()


@contextmanager
def torchrun_session(device):
    """The block runs as this process's share of the torchrun job: yields (World, this rank's device); a plain
    `python script.py` is a one-process world on `device`. On leaving, the process group is left after a last
    barrier, or at once after an error (torchrun then stops the other ranks)."""
    world, device = start_world(device)
    try:
        yield world, device
    except BaseException:
        end_world(world, clean=False)
        raise
    end_world(world)
