"""Argument precedence: parser defaults < dataset settings < --reproduce < command-line flags."""
import json
import types

import pytest

import arguments
from arguments import parse
from arguments.values import ipc_epochs
from utils import UserError


def test_defaults_then_reproduce_then_flags():
    assert parse("condense", ["-d", "cifar10"]).niter == 500
    assert parse("condense", ["-d", "cifar10", "--reproduce"]).niter == 10000
    assert parse("condense", ["-d", "cifar10", "--reproduce", "--niter", "7"]).niter == 7
    # a flag equal to the default still wins over the preset
    assert parse("condense", ["-d", "cifar10", "--reproduce", "--niter", "500"]).niter == 500


def test_lr_img_scales_with_ipc_unless_given():
    assert parse("condense", ["-d", "cifar10", "--ipc", "50", "--reproduce"]).lr_img == pytest.approx(0.5)
    assert parse("condense", ["-d", "imagenette", "--ipc", "10", "--reproduce"]).lr_img == pytest.approx(1.0)
    assert parse("condense", ["-d", "cifar10", "--ipc", "50", "--reproduce", "--lr_img", "0.2"]).lr_img == 0.2
    assert parse("condense", ["-d", "cifar10"]).lr_img == 5e-3


def test_dataset_settings_apply_without_reproduce_and_flags_win():
    a = parse("condense", ["-d", "imagenette", "--ipc", "10", "--factor", "2"])
    assert a.depth == 5 and a.eval_epochs == 1500 and a.eval_interval == 500
    assert parse("condense", ["-d", "imagenette", "--depth", "4"]).depth == 4
    assert parse("condense", ["-d", "imagenette", "--eval_epochs", "3"]).eval_epochs == 3
    assert parse("pretrain", ["-d", "imagenette", "--reproduce"]).batch_real == 128
    assert parse("pretrain", ["-d", "cifar10", "--reproduce"]).pretrain_amount == 20


def test_derived_settings():
    assert parse("condense", ["--factor", "2"]).init == "mix"
    assert parse("condense", ["--factor", "1"]).init == "random"
    assert parse("condense", ["--factor", "2", "--init", "noise"]).init == "noise"
    assert parse("condense", ["-d", "svhn"]).dsa_strategy == "color_crop_scale_rotate"
    assert parse("condense", ["-d", "cifar10"]).dsa_strategy == "color_crop_flip_scale_rotate"
    a = parse("condense", ["-d", "cifar10", "--depth", "4"])
    assert a.pretrain_dir.endswith("cifar10_convnet4_instance") and a.save_dir.startswith("results")
    assert parse("pretrain", ["-d", "cifar10", "--depth", "4"]).pretrain_dir == a.pretrain_dir


@pytest.mark.parametrize("ipc, factor, nclass, expected", [
    (1, 1, 10, 3000), (1, 2, 10, 2000), (10, 1, 10, 2000), (10, 2, 10, 1500), (50, 1, 10, 1500),
    (50, 2, 10, 1000), (100, 2, 10, 500), (200, 2, 10, 300), (10, 2, 100, 1000), (1, 1, 100, 2000),
])
def test_ipc_epoch_table(ipc, factor, nclass, expected):
    assert ipc_epochs(ipc, factor, nclass) == expected


def test_bound_caps_the_epoch_table():
    assert ipc_epochs(50, 3, 10, bound=200) == 1000


@pytest.mark.parametrize("argv, message", [
    (["-d", "nope"], "unknown dataset 'nope'; choose one of: mnist"),
    (["--net_type", "vgg"], "unknown --net_type 'vgg'; choose one of: convnet"),
    (["--ipc", "0"], "--ipc must be at least 1"),
    (["--factor", "0"], "--factor must be at least 1"),
    (["--lam_min", "0.8", "--lam_max", "0.2"], "lam_min"),
    (["--niter", "-1"], "--niter must be at least 1"),
    (["--align", "cf", "--align_scale", "0"], "--align_scale must be positive"),
    (["--align", "mmd", "--mmd_bandwidths", "1", "0"], "--mmd_bandwidths must all be positive"),
    (["--align", "cf", "--cf_alpha", "0", "--cf_beta", "0"], "not both 0"),
    (["--align", "cf", "--cf_frequencies", "0"], "--cf_frequencies must be at least 1"),
    (["--align", "moments", "--moments_weights", "0", "0"], "--moments_weights must be at least 0 and not both 0"),
    (["--align", "moments", "--moments_weights", "1", "nan"], "--moments_weights must be a finite number"),
    (["--align", "kl"], "invalid choice: 'kl'"),
    (["--cf_alpha", "0.3"], "--cf_alpha is a setting of --align cf, and this run aligns with mean"),
    (["--align", "mmd", "--cf_sampling_net"], "--cf_sampling_net is a setting of --align cf"),
])
def test_bad_values_are_user_errors(argv, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        parse("condense", argv)


def test_unknown_key_in_settings_file_fails(monkeypatch):
    fake = types.SimpleNamespace(SETTINGS={"condense": {"nitter": 3}})
    monkeypatch.setattr(arguments, "load_settings", lambda name: fake)
    with pytest.raises(UserError, match="unknown key 'nitter'"):
        parse("condense", [])


def test_print_config_prints_resolved_json(capsys):
    assert parse("condense", ["-d", "cifar10", "--reproduce", "--ipc", "10", "--print_config"]) is None
    config = json.loads(capsys.readouterr().out)
    assert config["niter"] == 10000 and config["lr_img"] == pytest.approx(0.1) and config["dataset"] == "cifar10"


def test_eval_lr_is_the_evaluation_networks_learning_rate():
    assert parse("evaluate", ["--eval_lr", "0.05"]).lr == 0.05
    assert parse("evaluate", ["--lr", "0.02"]).lr == 0.02


def test_print_config_shows_what_folder_detected_and_drops_flags_that_do_not_apply(tmp_path, capsys):
    from tests.fixtures import write_folder

    data_dir = write_folder(str(tmp_path / "data"), gray=True)
    assert parse("condense", ["-d", "folder", "--data_dir", data_dir, "--size", "16", "--print_config"]) is None
    config = json.loads(capsys.readouterr().out)
    assert config["detected"] == {"nclass": 3, "channels": 1, "size": 16,
                                  "class_names": ["class_0", "class_1", "class_2"]}
    assert not {"nclass", "phase", "download", "resume", "lr_img_per_ipc", "decode_type"} & set(config)
    assert config["size"] == 16 and config["data_dir"] == data_dir
    parse("condense", ["-d", "digits", "--print_config"])
    digits = json.loads(capsys.readouterr().out)
    assert "data_dir" not in digits and "size" not in digits and "detected" not in digits


def test_each_alignment_resolves_its_default_scale_and_a_flag_wins():
    assert [parse("condense", ["--align", name]).align_scale for name in ("mean", "mmd", "cf", "moments")] == \
        [1.0, 2.0, 20.0, 1.0]
    assert parse("condense", ["--align", "cf", "--align_scale", "300"]).align_scale == 300.0
    assert parse("condense", ["-d", "cifar10", "--reproduce"]).align == "mean"  # the paper's setting


def test_val_split_is_opt_in_and_chooses_the_selection():
    assert parse("condense", []).val_split == 0 and parse("condense", []).select_by == "test"
    assert parse("condense", ["--val_split", "0.1"]).select_by == "val"
    assert parse("pretrain", ["--val_split", "0.1", "--seed", "2"]).pretrain_dir.endswith("_val0.1_s2")
