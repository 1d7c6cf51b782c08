"""Bad input through each script's command-line entry (run_cli + parse, what `python X.py ...` runs): one line
naming the problem and the fix, exit status 2, no traceback, and nothing written (no folder, no partial file)."""
import json
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import DANCE
import evaluate
import pretrain
from arguments import parse
from data.synthetic import SyntheticSet
from utils import run_cli

ENTRY = {"pretrain": pretrain.main, "condense": DANCE.main, "evaluate": evaluate.main}


def image_tree(root, counts):
    """An ImageFolder tree with counts[c] training images (and one validation image) in class c."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c, n in enumerate(counts):
            folder = os.path.join(root, split, f"class_{c}")
            os.makedirs(folder)
            for i in range(n if split == "train" else 1):
                Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(f"{folder}/{i}.png")
    return root


def describe(path, **settings):
    """A set description as DANCE.py writes it, with `settings` over a digits run's."""
    base = {"dataset": "digits", "size": None, "nclass": 10, "phase": 0, "factor": 1, "decode_type": "single",
            "width": 0.25}
    with open(os.path.splitext(path)[0] + ".json", "w") as f:
        json.dump({"format": "dance-set/1", "settings": {**base, **settings}, "classes": [str(i) for i in range(10)],
                   "run": {"seed": 0, "iteration": 1, "method": {}}}, f)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Files the bad inputs point at (made once; each case then runs in an empty folder)."""
    base = tmp_path_factory.mktemp("inputs")
    (base / "afile").write_text("not a folder")
    (base / "notes.jsonl").write_text(json.dumps({"loss": 1.0}) + "\n")
    image_tree(str(base / "one_class"), [4])
    image_tree(str(base / "one_image"), [1, 4])
    SyntheticSet(10, 1, 1, 16).save(str(base / "plain.pt"))
    torch.save([torch.full((10, 1, 16, 16), 200.0), torch.arange(10)], base / "bytes.pt")
    SyntheticSet(10, 1, 1, 16).save(str(base / "described.pt"))
    describe(str(base / "described.pt"))
    SyntheticSet(10, 1, 1, 16).save(str(base / "edited.pt"))
    describe(str(base / "edited.pt"), factor="two")
    (base / "sets").mkdir()
    (base / "broken_run").mkdir()
    (base / "broken_run" / "args.json").write_text('{"dataset": "digits",\n')  # cut short
    return base


def run(script, argv, cwd, capsys):
    """Run `script`'s command line in `cwd`; returns (exit status, stderr lines, files left in cwd)."""
    capsys.readouterr()
    old = os.getcwd()
    os.chdir(cwd)
    try:
        try:
            device = [] if "--device" in argv else ["--device", "cpu"]
            run_cli(ENTRY[script], lambda: parse(script, argv + device))
            status = 0
        except SystemExit as stop:
            status = stop.code
    finally:
        os.chdir(old)
    return status, capsys.readouterr().err.strip().splitlines(), sorted(os.listdir(cwd))


CASES = [
    # pretrain.py: the training recipe, run flags, data and output paths
    ("pretrain", ["--lr", "0"], "--lr must be positive"),
    ("pretrain", ["--lr", "nan"], "--lr must be a finite number"),
    ("pretrain", ["--lr", "1e39"], "within float32's range"),
    ("pretrain", ["--momentum", "-0.1"], "--momentum must lie in [0, 1)"),
    ("pretrain", ["--weight_decay", "-1"], "--weight_decay must be at least 0"),
    ("pretrain", ["--beta", "0"], "--beta must be positive"),
    ("pretrain", ["--mix_p", "1.5"], "--mix_p must lie in [0, 1]"),
    ("pretrain", ["--width", "0"], "--width must lie in (0, 16]"),
    ("pretrain", ["--width", "1e-9"], "width 1e-09 gives 0 channels"),
    ("pretrain", ["--seed", "-1"], "--seed must be an integer in [0, 4294967295]"),
    ("pretrain", ["--seed", str(2 ** 40)], "--seed must be an integer in [0, 4294967295]"),
    ("pretrain", ["--device", "tpu"], "--device tpu is not a device; use auto, cpu, cuda, cuda:N"),
    ("pretrain", ["--device", "cuda:x"], "--device cuda:x is not a device"),
    ("pretrain", ["--pretrain_dir", "{inputs}/afile"], "afile is a file; pass a folder path"),
    ("pretrain", ["--pretrain_dir", "{inputs}/afile/sub"], "lies under the file"),
    ("pretrain", ["--pretrain_dir", ""], "--pretrain_dir is empty"),
    ("pretrain", ["--val_split", "1"], "--val_split must lie in [0, 1)"),
    ("pretrain", ["--size", "32"], "digits images are 16x16; --size 32 applies only to image-folder datasets"),
    ("pretrain", ["-d", "folder", "--data_dir", "{inputs}/one_class", "--size", "4"], "--size must lie in [8, 1024]"),
    ("pretrain", ["-d", "folder", "--data_dir", "{inputs}/one_class", "--size", "16"],
     "has 1 class (class_0); condensation needs at least 2 classes"),
    ("pretrain", ["-d", "folder", "--data_dir", "{inputs}/one_image", "--size", "16", "--val_split", "0.1"],
     "class 0 (class_0) has 1 training image"),
    ("pretrain", ["--nclass", "100"], "--nclass applies only to -d imagenet"),
    ("pretrain", ["--lr", "abc"], "argument --lr/--eval_lr: invalid float value: 'abc'; see python pretrain.py --help"),
    ("pretrain", ["--pretrain-epochs", "1"], "unrecognized arguments: --pretrain-epochs 1"),
    ("pretrain", ["-d", "cifar10", "--data_dir", "{inputs}"], "cifar-10-batches-py"),
    # DANCE.py: the method's flags, their fit to the data, the run folder
    ("condense", ["--niter", "0"], "--niter must be at least 1 (got 0); data_0.pt, the initial set, is saved"),
    ("condense", ["--class_chunk", "2"], "--class_chunk applies to --update joint only"),
    ("condense", ["--lr_img", "0.01", "--lr_img_per_ipc", "0.02"], "--lr_img and --lr_img_per_ipc both set the image"),
    ("condense", ["--resume", "{inputs}/broken_run"], "its args.json (the run's settings) is unreadable; restore it"),
    ("condense", ["--lr_img", "nan"], "--lr_img must be a finite number"),
    ("condense", ["--lr_img", "0"], "--lr_img must be positive"),
    ("condense", ["--lr_img_per_ipc", "-1"], "--lr_img_per_ipc must be positive"),
    ("condense", ["--mom_img", "1"], "--mom_img must lie in [0, 1)"),
    ("condense", ["--lam_min", "0.8", "--lam_max", "0.2"], "need 0 <= --lam_min <= --lam_max <= 1"),
    ("condense", ["--num_premodel", "-1"], "--num_premodel must be at least 0"),
    ("condense", ["--factor", "9"], "--factor 9 splits each 16x16 image into 9x9 crops"),
    ("condense", ["--ipc", "200"], "--init random with --ipc 200 needs 200 real images per class, but class"),
    ("condense", ["--ipc", "50", "--factor", "2"], "needs 200 real images per class"),
    ("condense", ["--depth", "9", "--num_premodel", "0"], "convnet: depth 9 pools a 16x16 input to nothing"),
    ("condense", ["--depth", "9"], "convnet: depth 9 pools a 16x16 input to nothing"),
    ("condense", ["--save_dir", "{inputs}/afile"], "afile is a file; pass a folder path"),
    ("condense", ["--save_dir", ""], "--save_dir is empty"),
    ("condense", ["--select_by", "val"], "--select_by val needs a held-out split: pass --val_split 0.05"),
    ("condense", ["--init", "foo"], "argument --init: invalid choice: 'foo'"),
    ("condense", ["--aug_type", "color_foo"], "--aug_type: unknown augmentation token 'foo'"),
    ("condense", ["--eval_aug", "imagenet"], "--eval_aug imagenet needs RGB images, but digits is grayscale"),
    ("condense", ["--resume", "{inputs}/sets"], "no args.json there; pass the folder of a DANCE.py run"),
    ("condense", ["--pretrain_dir", "{inputs}/sets", "--num_premodel", "1"],
     "premodel0_init.pth.tar is missing; train the experts first: python pretrain.py -d digits"),
    # evaluate.py: sets, their descriptions, results files
    ("evaluate", ["--data", "{inputs}/sets"], "is a folder; pass the condensed sets in it"),
    ("evaluate", ["--data", "{inputs}/missing.pt"], "no such file; pass a data_*.pt written by DANCE.py"),
    ("evaluate", ["--data", "{inputs}/nothing_*.pt"], "matches no file"),
    ("evaluate", ["--data", "{inputs}/bytes.pt"], "holds pixels in [200, 200], not [0, 1]"),
    ("evaluate", ["--data", "{inputs}/described.pt", "--factor", "2"],
     "--factor 2 contradicts {inputs}/described.pt, which was condensed with factor 1; drop --factor"),
    ("evaluate", ["--data", "{inputs}/described.pt", "-d", "mnist"], "-d mnist contradicts"),
    ("evaluate", ["--data", "{inputs}/edited.pt"], "sets factor to 'two', which --factor does not take"),
    ("evaluate", ["--data", "{inputs}/plain.pt", "--ipc", "5"], "--ipc applies to --baseline only"),
    ("evaluate", ["--data", "{inputs}/plain.pt", "--eval_nets", "vgg"], "--eval_nets: unknown architecture 'vgg'"),
    ("evaluate", ["--data", "{inputs}/plain.pt", "--runs", "0"], "--runs must be at least 1"),
    ("evaluate", ["--data", "{inputs}/plain.pt", "--dsa_strategy", "foo"], "unknown augmentation token 'foo'"),
    ("evaluate", ["--data", "{inputs}/plain.pt", "--results", "{inputs}/sets"], "is a folder; pass a file path"),
    ("evaluate", ["--data", "{inputs}/plain.pt", "--results", "{inputs}/afile/r.jsonl"],
     "--results {inputs}/afile/r.jsonl lies under the file"),
    ("evaluate", ["--data", "{inputs}/plain.pt", "--results", "{inputs}/notes.jsonl"],
     "--results: line 1 of {inputs}/notes.jsonl is not an evaluation record"),
    ("evaluate", ["--baseline", "random", "--ipc", "1000"], "--baseline random --ipc 1000 needs 1000 real images"),
    ("evaluate", ["--summarize", "{inputs}/notes.jsonl"], "--summarize: line 1 of"),
    ("evaluate", ["--summarize", "{inputs}/sets"], "is a folder; pass the results file evaluate.py wrote"),
    ("evaluate", [], "pass either --data PATH.pt"),
    # evaluate.py: scores, soft labels, export, plots
    ("evaluate", ["--data", "{inputs}/plain.pt", "--labels", "soft", "--temperature", "0"],
     "--temperature must lie in [0.1, 100]"),
    ("evaluate", ["--data", "{inputs}/plain.pt", "--labels", "soft", "--temperature", "1e-30"],
     "--temperature must lie in [0.1, 100] (a distillation temperature"),
    ("evaluate", ["--data", "{inputs}/plain.pt", "--labels", "soft", "--temperature", "1e30"],
     "--temperature must lie in [0.1, 100]"),
    ("evaluate", ["--data", "{inputs}/plain.pt", "--labels", "soft", "--temperature", "inf"],
     "--temperature must be a finite number"),
    ("evaluate", ["--data", "{inputs}/plain.pt", "--temperature", "2"], "--temperature applies to --labels soft only"),
    ("evaluate", ["--data", "{inputs}/plain.pt", "--eval_nets", ""], "--eval_nets is empty; name the networks"),
    ("evaluate", ["--summarize", "{inputs}/notes.jsonl", "--score"], "--summarize only reads a results file"),
    ("evaluate", ["--data", "{inputs}/plain.pt", "--labels", "fuzzy"], "argument --labels: invalid choice: 'fuzzy'"),
    ("evaluate", ["--data", "{inputs}/plain.pt", "--labels", "soft", "--pretrain_dir", "{inputs}/sets"],
     "--labels soft trains on expert 0's predictions, and {inputs}/sets/premodel0_trained.pth.tar is missing; run: "
     "python pretrain.py -d digits"),
    ("evaluate", ["--baseline", "full", "--score"], "--baseline full has nothing to score"),
    ("evaluate", ["--data", "{inputs}/plain.pt", "--export", "{inputs}"],
     "--export {inputs} is a non-empty folder that evaluate.py did not export to; pass a new or empty folder"),
    ("evaluate", ["--data", "{inputs}/plain.pt", "--export", "{inputs}/afile"], "afile is a file; pass a folder path"),
    ("evaluate", ["--data", "{inputs}/plain.pt", "--export", "out", "--score"], "--export only writes the sets"),
    ("evaluate", ["--data", "{inputs}/plain.pt", "--plot", "ipc.png"], "--plot draws a results file: pass it with "
     "--summarize"),
    ("evaluate", ["--summarize", "{inputs}/notes.jsonl", "--plot", "{inputs}/sets"],
     "--plot {inputs}/sets is a folder"),
    ("evaluate", ["--summarize", "{inputs}/notes.jsonl", "--plot", "{inputs}/afile/ipc.png"], "lies under the file"),
]


@pytest.mark.parametrize("script, argv, fragment", CASES, ids=[f"{s}:{' '.join(a)[:40]}" for s, a, _ in CASES])
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(script, argv, fragment, inputs, tmp_path, capsys):
    argv = [a.replace("{inputs}", str(inputs)) for a in argv]
    before = sorted(p for p in os.listdir(inputs))
    status, lines, left = run(script, argv, tmp_path, capsys)
    assert status == 2, lines
    assert len(lines) == 1 and "Traceback" not in lines[0] and lines[0].startswith("error: "), lines
    assert fragment.replace("{inputs}", str(inputs)) in lines[0], lines[0]
    assert left == [], left  # no run folder, results file or expert folder
    assert sorted(os.listdir(inputs)) == before


def test_cases_cover_each_script_and_enough_inputs():
    assert len(CASES) >= 40 and {s for s, _, _ in CASES} == set(ENTRY)


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's read-only /proc to test an unwritable path")
def test_an_unwritable_output_folder_is_refused_before_work(tmp_path, capsys):
    status, lines, left = run("condense", ["--save_dir", "/proc/self/nowhere"], tmp_path, capsys)
    assert status == 2 and len(lines) == 1 and "nothing can be written in /proc/self" in lines[0] and left == []


def test_a_diverging_expert_is_not_saved(tmp_path, capsys):
    status, lines, _ = run("pretrain", ["--lr", "1e30", "--pretrain_epochs", "2", "--pretrain_amount", "1",
                                        "--pretrain_dir", str(tmp_path / "experts")], tmp_path, capsys)
    assert status == 2 and "expert 0: the training loss became nan at epoch 1" in lines[-1]
    assert not (tmp_path / "experts" / "premodel0_trained.pth.tar").exists()
    shutil.rmtree(tmp_path / "experts")


def test_a_diverged_expert_from_older_code_is_trained_again(tmp_path, capsys):
    folder = tmp_path / "experts"
    argv = ["--pretrain_epochs", "1", "--pretrain_amount", "1", "--width", "0.125", "--pretrain_dir", str(folder)]
    assert run("pretrain", argv, tmp_path, capsys)[0] == 0
    trained = torch.load(folder / "premodel0_trained.pth.tar", weights_only=True)
    torch.save({k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in trained.items()},
               folder / "premodel0_trained.pth.tar")
    assert run("pretrain", argv, tmp_path, capsys)[0] == 0
    assert "already trained, skipped" not in (folder / "log.txt").read_text().split("pretrain digits")[-1]
    assert all(torch.isfinite(v).all() for v in torch.load(folder / "premodel0_trained.pth.tar").values())
    status, lines, _ = run("pretrain", argv + ["--lr", "0.02"], tmp_path, capsys)
    assert status == 2 and "trained with another recipe (lr 0.01 vs 0.02, folder vs now)" in lines[0]
