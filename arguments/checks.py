"""Checks of resolved settings, run before any work: each bad value is one UserError naming the flag and the fix."""
import math
import os

from data.augment import DiffAug
from data.datasets import DATASETS
from reports.export import check_export_dir
from reports.plots import picture_format
from reports.records import check_results_file, runs_path
from reports.trackers import require as require_trackers
from training.distributed import launched
from utils import UserError, check_device_name, check_output_dir, check_output_file

NET_TYPES = ("convnet", "resnet_ap", "resnet", "densenet")
NORM_TYPES = ("instance", "batch", "layer", "group", "none", "sn")
# each alignment's own settings (flag -> the --align it belongs to)
ALIGNMENT_FLAGS = {"mmd_bandwidths": "mmd", "cf_alpha": "cf", "cf_beta": "cf", "cf_frequencies": "cf",
                   "cf_sampling_net": "cf", "cf_sampling_lr": "cf", "moments_weights": "moments"}
MAX_SEED = 2**32 - 1  # numpy's generator takes 32 bits; experts and runs derive seed * 1000 + i from it
MIN_SIZE = 8          # three 2x poolings (ConvNet-3, ResNetAP stems, DenseNet) need at least 8 pixels
MAX_SIZE = 1024       # beyond this an image-folder dataset does not fit memory; resize the files first
MAX_WIDTH = 16        # ConvNet at width 16 already has 2048 channels per layer
FLOAT32_MAX = 3.4e38  # every float flag ends up in a float32 tensor or optimizer

TEMPERATURES = (0.1, 100.0)  # --temperature range where soft-label training is meaningful


def _positive_ints(script, a):
    keys = ["batch_size", "eval_interval", "depth"]
    if script == "pretrain":
        keys += ["pretrain_amount", "pretrain_epochs", "batch_real"]
    if script in ("condense", "evaluate"):
        keys += ["ipc", "factor"]
    if script == "condense":
        keys += ["batch_real", "batch_syn_max", "eval_runs"]
    if script == "evaluate":
        keys += ["runs"]
    for key in keys:
        if getattr(a, key) < 1:
            raise UserError(f"--{key} must be at least 1 (got {getattr(a, key)})")
    if a.eval_epochs is not None and a.eval_epochs < 1:
        raise UserError(f"--eval_epochs must be at least 1 (got {a.eval_epochs})")
    if a.parallel < 0:
        raise UserError(f"--parallel must be at least 0 (got {a.parallel}; 0 trains all networks at once)")
    if script == "condense":
        if a.cf_frequencies < 1:
            raise UserError(f"--cf_frequencies must be at least 1 (got {a.cf_frequencies})")
        if a.niter < 1:
            raise UserError(f"--niter must be at least 1 (got {a.niter}); data_0.pt, the initial set, is saved by any "
                            f"run, so --niter 1 gives it too")
        for key in ("num_premodel", "iter_calib", "eval_every", "ckpt_every", "class_chunk"):
            if getattr(a, key) < 0:
                raise UserError(f"--{key} must be at least 0 (got {getattr(a, key)})")


def _finite(key, value):
    if value is not None and not (math.isfinite(value) and abs(value) <= FLOAT32_MAX):
        raise UserError(f"--{key} must be a finite number within float32's range (got {value})")


def _float_ranges(script, a):
    """Every float flag is finite and inside the range where the method is defined."""
    floats = ["lr", "momentum", "weight_decay", "beta", "mix_p", "width"]
    if script in ("pretrain", "condense"):
        floats += ["val_split"]
    if script == "condense":
        floats += ["lr_img_per_ipc", "lr_img", "mom_img", "lam_min", "lam_max"]
    if script == "evaluate":
        floats += ["temperature"]
    for key in floats:
        _finite(key, getattr(a, key))
    ranges = [("lr", a.lr > 0, "be positive"), ("momentum", 0 <= a.momentum < 1, "lie in [0, 1)"),
              ("weight_decay", a.weight_decay >= 0, "be at least 0"),
              ("beta", a.beta > 0, "be positive (CutMix draws Beta(beta, beta))"),
              ("mix_p", 0 <= a.mix_p <= 1, "lie in [0, 1]"),
              ("width", 0 < a.width <= MAX_WIDTH, f"lie in (0, {MAX_WIDTH}] (a channel multiplier)")]
    if script in ("pretrain", "condense"):
        ranges.append(("val_split", 0 <= a.val_split < 1, "lie in [0, 1) (0: no held-out split)"))
    if script == "evaluate":
        ranges.append(("temperature", TEMPERATURES[0] <= a.temperature <= TEMPERATURES[1],
                       f"lie in [{TEMPERATURES[0]:g}, {TEMPERATURES[1]:g}] (a distillation temperature; 1-20 are "
                       f"usual: far below, the loss's gradient vanishes, far above, its T^2 factor overflows)"))
    if script == "condense":
        ranges += [("lr_img_per_ipc", a.lr_img_per_ipc is None or a.lr_img_per_ipc > 0, "be positive"),
                   ("lr_img", a.lr_img > 0, "be positive"),
                   ("mom_img", 0 <= a.mom_img < 1, "lie in [0, 1)")]
    for key, ok, rule in ranges:
        if not ok:
            raise UserError(f"--{key} must {rule} (got {getattr(a, key)})")
    if script == "condense":
        _alignment_values(a)
    if script == "condense" and not 0 <= a.lam_min <= a.lam_max <= 1:
        raise UserError(f"need 0 <= --lam_min <= --lam_max <= 1 (got {a.lam_min}, {a.lam_max})")


def _alignment_values(a):
    """The alignment's settings are finite and where its formula is defined."""
    for key in ("align_scale", "cf_alpha", "cf_beta", "cf_sampling_lr"):
        _finite(key, getattr(a, key))
    for key, values in (("mmd_bandwidths", a.mmd_bandwidths), ("moments_weights", a.moments_weights)):
        for value in values:
            _finite(key, value)
    if a.align_scale <= 0:
        raise UserError(f"--align_scale must be positive (got {a.align_scale})")
    if min(a.mmd_bandwidths) <= 0:
        raise UserError(f"--mmd_bandwidths must all be positive (got {a.mmd_bandwidths}): multiples of the median "
                        f"squared distance")
    if min(a.cf_alpha, a.cf_beta) < 0 or a.cf_alpha + a.cf_beta == 0:
        raise UserError(f"--cf_alpha and --cf_beta must be at least 0 and not both 0 (got {a.cf_alpha}, {a.cf_beta})")
    if a.cf_sampling_lr <= 0:
        raise UserError(f"--cf_sampling_lr must be positive (got {a.cf_sampling_lr})")
    if a.cf_sampling_net and a.update == "per_class" and launched():
        raise UserError("--cf_sampling_net under torchrun needs --update joint (one step per view on every rank, so "
                        "every rank's sampling network takes the same steps)")
    if min(a.moments_weights) < 0 or sum(a.moments_weights) == 0:
        raise UserError(f"--moments_weights must be at least 0 and not both 0 (got {a.moments_weights})")


def effective_size(a):
    """The image size the dataset will have: --size, else the table's (folder: 32)."""
    return a.size or DATASETS[a.dataset].size or 32


def _data_flags(a):
    spec = DATASETS[a.dataset]
    if a.size is not None:
        if not MIN_SIZE <= a.size <= MAX_SIZE:
            raise UserError(f"--size must lie in [{MIN_SIZE}, {MAX_SIZE}] (got {a.size}): the networks pool three "
                            f"times, and larger images do not fit memory")
        if not spec.resizable and a.size != spec.size:
            raise UserError(f"{a.dataset} images are {spec.size}x{spec.size}; --size {a.size} applies only to "
                            f"image-folder datasets: drop it")
    if a.dataset == "imagenet" and a.nclass < 2:
        raise UserError(f"-d imagenet takes --nclass 10 or 100 (slices of class100.txt) or the number of class "
                        f"folders in train/ (every class, e.g. 1000), not {a.nclass}")
    if a.phase < 0:
        raise UserError(f"--phase must be at least 0 (got {a.phase})")
    factor = getattr(a, "factor", 1)
    size = effective_size(a)
    if factor > size // 2:
        raise UserError(f"--factor {factor} splits each {size}x{size} image into {factor}x{factor} crops, too small "
                        f"to hold an image; use --factor {size // 2} or less")


def _choices(a):
    if a.net_type not in NET_TYPES:
        raise UserError(f"unknown --net_type '{a.net_type}'; choose one of: {', '.join(NET_TYPES)}")
    if a.norm_type not in NORM_TYPES:
        raise UserError(f"unknown --norm_type '{a.norm_type}'; choose one of: {', '.join(NORM_TYPES)}")
    for key in ("dsa_strategy", "aug_type"):
        value = getattr(a, key, None)
        if value is not None:
            try:
                DiffAug(value)
            except UserError as e:
                raise UserError(f"--{key}: {e}") from None
    if not 0 <= a.seed <= MAX_SEED:
        raise UserError(f"--seed must be an integer in [0, {MAX_SEED}] (got {a.seed})")
    check_device_name(a.device)
    if getattr(a, "eval_aug", "dsa") == "imagenet" and DATASETS[a.dataset].channels == 1:
        raise UserError(f"--eval_aug imagenet needs RGB images, but {a.dataset} is grayscale; use --eval_aug dsa")


def _outputs(script, a):
    """Output folders and files can be created and written (nothing is created here)."""
    if script == "pretrain":
        check_output_dir(a.pretrain_dir, "--pretrain_dir")
    if script == "condense":
        check_output_dir(a.save_dir, "--save_dir")
        if a.pretrain_dir and os.path.isfile(a.pretrain_dir):
            raise UserError(f"--pretrain_dir {a.pretrain_dir} is a file; pass the folder pretrain.py wrote")
    if script == "evaluate" and a.summarize and a.plot:
        if os.path.isdir(a.plot):
            raise UserError(f"--plot {a.plot} is a folder; pass a PNG file path, e.g. "
                            f"{os.path.join(a.plot, 'ipc.png')}")
        picture_format(a.plot)
        check_output_dir(os.path.dirname(os.path.abspath(a.plot)), "--plot", target=a.plot)
    if script == "evaluate" and not a.summarize and a.export:
        check_export_dir(a.export)
    elif script == "evaluate" and not a.summarize:
        check_output_file(a.results, "--results")
        check_output_file(runs_path(a.results), "--results (its finished-runs file)")
        check_results_file(a.results)


def check_settings(script, a):
    """Refuse values that cannot work, naming the flag and the fix."""
    _positive_ints(script, a)
    _float_ranges(script, a)
    _choices(a)
    _data_flags(a)
    require_trackers(getattr(a, "logger", None))  # a missing tracker package fails now, not after the work
    if script == "condense":
        if a.select_by == "val" and not a.val_split:
            raise UserError("--select_by val needs a held-out split: pass --val_split 0.05 (and train the experts "
                            "with the same --val_split and --seed)")


def check_explicit(script, a, explicit):
    """Flags given by hand that this call would silently ignore are refused."""
    for key in ("nclass", "phase"):
        if key in explicit and a.dataset != "imagenet":
            raise UserError(f"--{key} applies only to -d imagenet (its class slice); drop it")
    for key, align in ALIGNMENT_FLAGS.items():
        if script == "condense" and key in explicit and a.align != align:
            raise UserError(f"--{key} is a setting of --align {align}, and this run aligns with {a.align}; add "
                            f"--align {align} or drop it")
    if script == "condense" and "lr_img" in explicit and "lr_img_per_ipc" in explicit:
        raise UserError("--lr_img and --lr_img_per_ipc both set the image learning rate (lr_img = lr_img_per_ipc x "
                        "ipc); give one of them")
    if script == "condense" and "class_chunk" in explicit and a.update != "joint":
        raise UserError("--class_chunk applies to --update joint only (per_class steps one class at a time); add "
                        "--update joint or drop it")
    if script == "evaluate" and "ipc" in explicit and not a.baseline:
        raise UserError("--ipc applies to --baseline only: a condensed set's ipc is read from the set; drop it")
    if script == "evaluate":
        _evaluate_combinations(a, explicit)


def _evaluate_combinations(a, explicit):
    """evaluate.py's flags that only make sense together (or apart)."""
    if "temperature" in explicit and a.labels != "soft":
        raise UserError("--temperature applies to --labels soft only; add --labels soft or drop it")
    if a.plot is not None and not a.summarize:
        raise UserError("--plot draws a results file: pass it with --summarize RESULTS_JSONL")
    if a.score and a.baseline == "full":
        raise UserError("--score compares a set with the whole training set, so --baseline full has nothing to score; "
                        "score a condensed set (--data) or a random/herding/kcenter baseline")
    if a.export and (a.score or a.summarize):
        raise UserError("--export only writes the sets (no training); run --score or --summarize in another call")
    if a.summarize and a.score:
        raise UserError("--summarize only reads a results file (no training), and its tables show the scores "
                        "recorded there; drop --score, or score sets with --data ... --score")
    if a.eval_nets is not None and not [n for n in str(a.eval_nets).split(",") if n.strip()]:
        raise UserError("--eval_nets is empty; name the networks (e.g. --eval_nets convnet,resnet_ap) or drop it")


def check_data_fit(a, info):
    """Settings that depend on the loaded data (image channels), checked before any work."""
    if getattr(a, "eval_aug", "dsa") == "imagenet" and info.channels != 3:
        raise UserError(f"--eval_aug imagenet needs RGB images, but {a.dataset} has {info.channels} channel(s); "
                        f"use --eval_aug dsa")


def check_outputs(script, a):
    """The filesystem part of the checks (after the derived output paths are known)."""
    _outputs(script, a)
