"""Faithful defaults: the whole training set by default, an opt-in held-out split kept out of expert training
too, the ImageNet family's official settings, and hints whose commands work."""
import hashlib
import shlex

import pytest

import DANCE
import pretrain
from arguments import parse
from arguments.values import eval_protocol
from data.datasets import holdout, load_dataset
from tests.fixtures import write_fixture
from training.set_accuracy import eval_recipe
from utils import UserError


def test_reproduce_condenses_the_whole_training_set(tmp_path):
    data_dir = write_fixture("cifar10", str(tmp_path / "data"))
    args = parse("condense", ["-d", "cifar10", "--data_dir", data_dir, "--reproduce", "--ipc", "1", "--device", "cpu"])
    assert args.val_split == 0 and args.select_by == "test" and args.niter == 10000
    train, val, _, _ = DANCE.condensation_data(args, "cpu")
    assert val is None and len(train) == len(load_dataset("cifar10", data_dir)[0]) == 40


def fingerprints(images):
    return {hashlib.sha1(x.numpy().tobytes()).hexdigest() for x in images.cpu()}


def test_held_out_images_reach_neither_experts_nor_condensation(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data_dir = write_fixture("folder", str(tmp_path / "data"))
    common = ["-d", "folder", "--size", "16", "--data_dir", data_dir, "--width", "0.0625", "--device", "cpu",
              "--seed", "3", "--val_split", "0.25"]
    seen = {"experts": [], "condensed": []}
    real_fit = pretrain.fit_group

    def spying_fit(models, images, *rest, **kw):
        seen["experts"].append(images)
        return real_fit(models, images, *rest, **kw)

    monkeypatch.setattr(pretrain, "fit_group", spying_fit)
    real_sampler = DANCE.ClassSampler

    def spying_sampler(split, *rest, **kw):
        seen["condensed"].append(split.images)
        return real_sampler(split, *rest, **kw)

    monkeypatch.setattr(DANCE, "ClassSampler", spying_sampler)
    pretrain.main(parse("pretrain", common + ["--pretrain_amount", "1", "--pretrain_epochs", "1"]))
    args = parse("condense", common + ["--ipc", "1", "--niter", "1", "--num_premodel", "1", "--eval_every", "1",
                                       "--eval_epochs", "1", "--batch_size", "16", "--save_dir", str(tmp_path / "r")])
    assert args.select_by == "val" and args.pretrain_dir.endswith("_val0.25_s3")
    DANCE.main(args)
    train, _, info = load_dataset("folder", data_dir, size=16)
    rest, held = holdout(train, info.nclass, 0.25, seed=3)
    assert len(held) == 3 and len(rest) == 9
    for images in seen["experts"] + seen["condensed"]:
        assert fingerprints(images) == fingerprints(rest.images)
    assert not fingerprints(held.images) & fingerprints(seen["condensed"][0])
    assert "new best val acc" in (tmp_path / "r" / "log.txt").read_text()


def test_a_held_out_split_needs_experts_trained_without_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data_dir = write_fixture("folder", str(tmp_path / "data"))
    common = ["-d", "folder", "--size", "16", "--data_dir", data_dir, "--width", "0.0625", "--device", "cpu",
              "--pretrain_dir", str(tmp_path / "experts")]
    pretrain.main(parse("pretrain", common + ["--pretrain_amount", "1", "--pretrain_epochs", "1"]))
    cond = common + ["--ipc", "1", "--niter", "1", "--num_premodel", "1", "--val_split", "0.25", "--eval_every", "0",
                     "--save_dir", str(tmp_path / "r")]
    with pytest.raises(UserError, match="trained on the whole training set, so selection would not be independent; "
                                        "train experts with the same split: python pretrain.py .*--val_split 0.25") \
            as refused:
        DANCE.main(parse("condense", cond))
    assert not (tmp_path / "r").exists()
    command, fresh = str(refused.value).split("same split: ")[1].split(", then pass --pretrain_dir ")
    pretrain.main(parse("pretrain", shlex.split(command)[2:] + ["--pretrain_epochs", "1", "--device", "cpu"]))
    DANCE.main(parse("condense", cond + ["--pretrain_dir", fresh]))  # the hint's experts are accepted
    assert (tmp_path / "r" / "data_1.pt").is_file()


@pytest.mark.parametrize("flags", [["--width", "0.125"], ["--depth", "2"]])
def test_the_missing_experts_hint_is_a_command_that_works(tmp_path, monkeypatch, flags):
    monkeypatch.chdir(tmp_path)
    data_dir = write_fixture("folder", str(tmp_path / "data"))
    cond = ["-d", "folder", "--size", "16", "--data_dir", data_dir, "--device", "cpu", "--ipc", "1", "--niter", "1",
            "--num_premodel", "1", "--eval_every", "0", "--save_dir", str(tmp_path / "r")] + flags
    with pytest.raises(UserError) as missing:
        DANCE.main(parse("condense", cond))
    command = str(missing.value).split("train the experts first: ")[1]
    argv = shlex.split(command)
    assert argv[:2] == ["python", "pretrain.py"] and "--size" in argv and flags[0] in argv
    pretrain.main(parse("pretrain", argv[2:] + ["--pretrain_epochs", "1", "--device", "cpu"]))
    DANCE.main(parse("condense", cond))  # the experts the hint trained are the ones this run needs
    assert (tmp_path / "r" / "data_1.pt").is_file()


def test_mismatched_experts_name_the_flag(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    common = ["-d", "digits", "--pretrain_dir", str(tmp_path / "experts"), "--device", "cpu"]
    pretrain.main(parse("pretrain", common + ["--pretrain_amount", "1", "--pretrain_epochs", "1", "--width", "0.125"]))
    with pytest.raises(UserError, match=r"another network \(--width: 0.125 vs 0.25, experts vs this run\)"):
        DANCE.main(parse("condense", common + ["--num_premodel", "1", "--save_dir", str(tmp_path / "r")]))
    with pytest.raises(UserError, match=r"another network \(--width: 0.125 vs 0.25, folder vs now\)"):
        pretrain.main(parse("pretrain", common + ["--pretrain_amount", "1", "--pretrain_epochs", "1"]))


def test_imagenet_uses_the_official_augmentation_and_settings():
    args = parse("evaluate", ["-d", "imagenet"])
    assert (args.eval_aug, args.mix_p, args.net_type, args.depth) == ("imagenet", 1.0, "resnet_ap", 10)
    recipe = eval_recipe(eval_protocol(args), 10)
    assert recipe.pixel_aug is not None and not recipe.dsa.enabled and recipe.mix_p == 1.0
    hundred = parse("condense", ["-d", "imagenet", "--nclass", "100", "--reproduce", "--ipc", "20", "--factor", "3"])
    assert (hundred.lr, hundred.weight_decay, hundred.batch_size, hundred.batch_real, hundred.decode_type) == \
        (0.1, 1e-4, 128, 128, "bound")
    assert hundred.eval_epochs == 600  # the ipc table at bound 200, two thirds for 100 classes
    ten = parse("condense", ["-d", "imagenet", "--ipc", "20", "--factor", "3"])
    assert (ten.lr, ten.decode_type) == (0.01, "single")  # the decode rule is --reproduce's
    given = parse("condense", ["-d", "imagenet", "--nclass", "100", "--lr", "0.05", "--eval_aug", "dsa"])
    assert (given.lr, given.eval_aug, given.weight_decay) == (0.05, "dsa", 1e-4)
    assert parse("evaluate", ["-d", "imagenette"]).eval_aug == "dsa"
