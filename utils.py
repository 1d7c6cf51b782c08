"""Shared machinery: user errors, seeding, device choice, atomic writes, safe loading, logging, grids."""
import ctypes
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager

import numpy as np
import torch


class UserError(Exception):
    """Bad input from the user: reported as one line, exit status 2, no traceback."""


class RunStopped(Exception):
    """A run stopped by a signal after saving its state: one line, exit status 128 + the signal's number."""

    def __init__(self, message, signum):
        super().__init__(message)
        self.status = 128 + signum


KEEP_MEMORY_ENV = "DANCE_KEEP_MEMORY"  # 0: glibc's defaults; 1 (default): up to 32 MiB buffers; all: every buffer
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -3, -4  # glibc's mallopt parameters (malloc.h)
MMAP_THRESHOLD_MAX = 32 * 2**20  # the largest threshold glibc accepts on 64-bit systems


def keep_freed_memory():
    """Make glibc keep freed memory in the process for reuse; the mode applied ('1', 'all'), or None.

    By default glibc serves every buffer above its (adaptive) mmap threshold with a fresh mmap and unmaps it
    on free, so each activation of a large batch costs page faults and zeroing, every operator, every step.
    Mode 1 serves buffers up to 32 MiB from the heap and never trims it (no more memory than the default,
    measured); 'all' turns mmap off, so every buffer is reused: faster still for large batches, but the
    heap then fragments to 2-3 times the peak memory (bench/speed.py).
    """
    mode = os.environ.get(KEEP_MEMORY_ENV, "1")
    if mode == "0" or not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # only glibc has mallopt's semantics (musl lacks both)
    except (OSError, AttributeError):
        return None
    if mode == "all":
        applied = libc.mallopt(M_MMAP_MAX, 0)
    else:
        applied = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)
    return mode if applied and libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1) else None


def configure_process():
    """Start-up settings of every entry point: the allocator, cuDNN autotuning and TF32 on Ampere+ GPUs."""
    keep_freed_memory()
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True


def _say(line, every_rank=False):
    """One line on stderr. Under torchrun only the first process prints (every rank meets the same user error or
    signal, so it is printed once); with `every_rank` (a fault of one rank's own, such as its memory) each prints,
    naming its rank."""
    rank = int(os.environ.get("RANK", "0") or 0)
    if rank == 0 or every_rank:
        print(line if rank == 0 else f"rank {rank}: {line}", file=sys.stderr)


def run_cli(main, parse):
    """Run `main(parse())` after `configure_process`; a UserError becomes one line on stderr and exit status 2."""
    configure_process()
    try:
        args = parse()
        if args is None:
            return 0
        main(args)
    except UserError as e:
        _say(f"error: {e}")
        sys.exit(2)
    except (MemoryError, RuntimeError) as e:
        if not is_out_of_memory(e):
            raise
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        _say(f"error: out of memory ({reason}); lower --batch_real, --batch_size, --ipc, --width or --size, or use "
             f"a device with more memory", every_rank=True)
        sys.exit(2)
    except RunStopped as e:
        _say(f"stopped: {e}")
        sys.exit(e.status)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    return 0


def is_out_of_memory(error):
    """True for an allocation failure on the CPU or an accelerator."""
    oom = getattr(torch, "OutOfMemoryError", ())
    text = str(error)
    return (isinstance(error, MemoryError) or (oom and isinstance(error, oom)) or "out of memory" in text
            or "can't allocate memory" in text or "DefaultCPUAllocator" in text)


def seed_everything(seed):
    """Seed python, numpy and torch (any value, 0 included)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


DEVICE_FORMS = "auto, cpu, cuda, cuda:N (N = 0, 1, ...) or mps"


def check_device_name(name):
    """Refuse a --device that names no device kind we run on (availability is select_device's check)."""
    kind, _, index = name.partition(":")
    valid = (name in ("auto", "cpu", "mps", "cuda")) or (kind == "cuda" and index.isdigit())
    if not valid:
        raise UserError(f"--device {name} is not a device; use {DEVICE_FORMS}")


def select_device(name="auto"):
    """The one place a device is chosen: 'auto' picks the accelerator when present."""
    check_device_name(name)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"--device {name} was asked for but no CUDA device is visible; use --device cpu")
        index = int(name.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise UserError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) are visible "
                            f"(cuda:0 to cuda:{torch.cuda.device_count() - 1}); pick one of them")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UserError("--device mps was asked for but MPS is not available here; use --device cpu")
    return torch.device(name)


CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of CPUs whose matrix units compute bf16
CPUINFO = "/proc/cpuinfo"


def native_bf16(device):
    """(True, why) when `device` computes bf16 natively, else (False, why): CUDA compute capability 8.0 or newer;
    on the CPU, AVX512-BF16 or AMX in /proc/cpuinfo (other systems, and MPS: no). DANCE_NATIVE_BF16=1 or 0 overrides
    the detection (a virtual machine that hides its CPU flags; one precision across a mixed cluster)."""
    override = os.environ.get("DANCE_NATIVE_BF16")
    if override in ("0", "1"):
        return override == "1", f"DANCE_NATIVE_BF16={override}"
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return (major, minor) >= (8, 0), f"CUDA compute capability {major}.{minor}"
    if device.type != "cpu":
        return False, f"{device.type} is not checked for native bf16"
    try:
        with open(CPUINFO) as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False, "the CPU's flags are unreadable (no /proc/cpuinfo)"
    found = [flag for flag in CPU_BF16_FLAGS if flag in flags]
    return bool(found), f"CPU flags: {', '.join(found)}" if found else "the CPU has neither AVX512-BF16 nor AMX"


def resolve_precision(requested, device):
    """--precision as run: 'auto' becomes bf16 where `device` computes it natively, fp32 elsewhere."""
    if requested != "auto":
        return requested
    return "bf16" if native_bf16(device)[0] else "fp32"


def precision_line(precision, device):
    """The line a script prints at start: the precision it runs and why that suits (or does not suit) `device`."""
    native, why = native_bf16(device)
    if precision == "fp32":
        return f"precision fp32 ({why}" + ("; bf16 would be faster here: --precision auto or bf16)" if native else ")")
    return f"precision bf16 autocast ({why}" + ("; --precision fp32 gives the paper's arithmetic)" if native else
                                                "; without native bf16 it runs emulated, slower than fp32)")


TEMP_PREFIX = ".tmp_"


def _atomic_write(path, write_fn):
    """Write through a temp file in the same folder, fsync, then rename over `path`.

    `path` is either the old file or the complete new one, whatever happens (a kill, a full disk);
    a failed write is a UserError naming the file, and the temp file is removed when possible.
    """
    folder = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX + os.path.basename(path), dir=folder)
        _ordinary_mode(fd)
        with os.fdopen(fd, "wb") as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
        _fsync_folder(folder)
    except OSError as e:
        raise UserError(f"could not write {path}: {e.strerror or e}; check the folder's permissions and free "
                        f"space (the previous file, if any, is unchanged)") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)


def _ordinary_mode(fd):
    """mkstemp makes 0600 files; give the file the mode open() would (0666 less the umask), so others can read it."""
    if hasattr(os, "fchmod"):
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)


def _nearest_existing(path):
    """The path itself or its closest existing ancestor."""
    path = os.path.abspath(path)
    while not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def _can_write_in(folder):
    """True when a file can really be created in `folder` (os.access is blind to read-only mounts and root)."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def check_output_dir(path, flag, target=None):
    """Refuse, before any work, a folder that is a file or cannot be created or written; leaves nothing behind.

    `target` is the file the folder is for (check_output_file), named in the message instead.
    """
    kind = "file" if target else "folder"
    target = target or path
    if not str(path).strip():
        raise UserError(f"{flag} is empty; pass a {kind} path")
    existing = _nearest_existing(path)
    if not os.path.isdir(existing):
        what = "is a file" if existing == os.path.abspath(target) else f"lies under the file {existing}"
        raise UserError(f"{flag} {target} {what}; pass a {kind} path elsewhere")
    if not _can_write_in(existing):
        raise UserError(f"{flag} {target}: nothing can be written in {existing}; pass a path you can write to")


def check_output_file(path, flag):
    """Refuse, before any work, a file path that is a folder or cannot be created or appended to."""
    if not str(path).strip():
        raise UserError(f"{flag} is empty; pass a file path")
    if os.path.isdir(path):
        raise UserError(f"{flag} {path} is a folder; pass a file path, e.g. {os.path.join(path, 'evaluations.jsonl')}")
    if os.path.exists(path):
        try:
            with open(path, "a"):
                return
        except OSError as e:
            raise UserError(f"{flag} {path} cannot be appended to ({e.strerror}); pass another file") from None
    check_output_dir(os.path.dirname(os.path.abspath(path)), flag, target=path)


def make_dir(path, flag):
    """os.makedirs, with a failure reported as one line naming the flag."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise UserError(f"{flag} {path} cannot be created ({e.strerror or e}); pass another folder") from None


def _fsync_folder(folder):
    """Make a rename in `folder` durable (a power cut after it keeps the new file), where supported."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass  # some systems (Windows, a few network file systems) cannot fsync a folder; the file is complete


def remove_stale_temps(folder):
    """Delete temp files that a killed writer left in `folder` (the files they were for are intact)."""
    for name in os.listdir(folder) if os.path.isdir(folder) else []:
        if name.startswith(TEMP_PREFIX):
            try:
                os.remove(os.path.join(folder, name))
            except OSError:
                pass  # a leftover that cannot be removed only costs disk space; it is never read


def atomic_save(obj, path):
    """torch.save `obj` to `path` atomically: a crash never leaves a truncated file."""
    _atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_text(text, path):
    """Write a text file atomically."""
    atomic_write_bytes(text.encode(), path)


def atomic_write_bytes(data, path):
    """Write bytes (an encoded image, ...) to a file atomically."""
    _atomic_write(path, lambda f: f.write(data))


def atomic_write_json(obj, path):
    """Write JSON atomically, indented for people to read."""
    atomic_write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n", path)


def safe_load(path, what="file"):
    """torch.load with weights_only=True; a missing, corrupt or code-carrying file is a UserError."""
    if not os.path.isfile(path):
        raise UserError(f"{what} not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for bad pickles and truncated zips
        detail = str(e).strip().splitlines()[0] if str(e).strip() else ""
        reason = f"{type(e).__name__}: {detail}" if detail else type(e).__name__  # a bare "101" says nothing
        raise UserError(f"cannot read {what} {path} ({reason[:160]}); it is corrupt, truncated or not a "
                        f"tensor file: recreate it")


def git_revision():
    """The repository's git revision, or 'unknown' outside a checkout."""
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class Logger:
    """Print and append to a plain log file; metrics go to a JSON-lines file beside it.

    `echo` prints a line to the terminal (a progress bar swaps in its own writer, so lines do not tear it).
    """

    def __init__(self, folder=None, name="log.txt"):
        self.path = os.path.join(folder, name) if folder else None
        self.metrics_path = os.path.join(folder, "metrics.jsonl") if folder else None
        self.echo = lambda line: print(line, flush=True)

    def __call__(self, msg):
        line = f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {msg}"
        self.echo(line)
        if self.path:
            self._append(self.path, line)

    def metrics(self, **values):
        """Append one JSON line of metrics."""
        if self.metrics_path:
            self._append(self.metrics_path, json.dumps(values, default=float))

    @staticmethod
    def _append(path, line):
        """Append one line; a failed append is a UserError naming the file."""
        try:
            with open(path, "a") as f:
                f.write(line + "\n")
        except OSError as e:
            raise UserError(f"could not append to {path}: {e.strerror or e}; check the folder's permissions "
                            f"and free space") from None


def save_grid(images, path, nrow=10, max_images=200, max_width=64, labels=None, min_width=48):
    """Save the first `max_images` images ([0,1] pixels) as a PNG grid of `nrow` per row, atomically; with
    `labels`, one per row, each row's label is written in a margin on its left (class names). Returns the picture
    (a PIL image), e.g. for a tracker."""
    picture = grid_picture(images, nrow, max_images, max_width, labels, min_width)
    _atomic_write(path, lambda f: picture.save(f, format="png"))
    return picture


def grid_picture(images, nrow=10, max_images=200, max_width=64, labels=None, min_width=48):
    """The grid `save_grid` writes, as a PIL RGB image."""
    from PIL import Image, ImageDraw
    from torchvision.utils import make_grid

    x = images[:max_images].detach().float().cpu().clamp(0, 1)
    if x.shape[-1] > max_width:
        x = torch.nn.functional.interpolate(x, size=(max_width, max_width), mode="nearest")
    elif x.shape[-1] < min_width:  # tiny images (digits) are enlarged so a person can see them
        x = torch.nn.functional.interpolate(x, scale_factor=-(-min_width // x.shape[-1]), mode="nearest")
    pad = 2
    grid = make_grid(x, nrow=nrow, padding=pad, pad_value=1.0)
    picture = Image.fromarray(grid.mul(255).round().byte().permute(1, 2, 0).numpy())
    if labels:
        draw = ImageDraw.Draw(picture)
        margin = 8 + max(int(draw.textlength(str(label))) for label in labels)
        canvas = Image.new("RGB", (picture.width + margin, picture.height), "white")
        canvas.paste(picture, (margin, 0))
        draw = ImageDraw.Draw(canvas)
        step = x.shape[-2] + pad
        for row, label in enumerate(labels[:-(-len(x) // nrow)]):
            draw.text((4, pad + row * step + x.shape[-2] // 2 - 5), str(label), fill="black")
        picture = canvas
    return picture


def read_json(path):
    """A JSON file's content, or None when it does not exist; a corrupt one is a UserError."""
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read {path} ({e}); delete it or restore it")


def rng_state():
    """Every random stream's state (python, numpy, torch CPU, CUDA), in types torch.load(weights_only) reads."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"python": random.getstate(),
            "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                      "gauss": float(gauss)},
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state):
    """Restore the streams captured by `rng_state` (CUDA ones for the devices both runs have)."""
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if torch.cuda.is_available():
        for device, cuda in enumerate(state["cuda"][:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda, device)


@contextmanager
def preserved_rng():
    """Run a block without moving the python, numpy and torch random streams of the caller."""
    saved = rng_state()
    try:
        yield
    finally:
        set_rng_state(saved)
