"""Sets that describe themselves: DANCE.py writes data_K.json, evaluate.py takes its defaults from it."""
import json
import os
import stat

import pytest
import torch

import DANCE
import evaluate
import pretrain
from arguments import parse
from data.set_files import checked_pixels, description_path, read_description
from data.synthetic import SyntheticSet
from reports.records import summarize
from tests.fixtures import write_fixture
from utils import UserError, atomic_save

TINY = ["--width", "0.0625", "--seed", "1", "--device", "cpu"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A folder fixture, one expert, and two tiny runs: factor 2 with width 0.0625, factor 1 with eval_epochs 2."""
    base = tmp_path_factory.mktemp("described")
    data_dir = write_fixture("folder", str(base / "data"))
    common = ["-d", "folder", "--size", "16", "--data_dir", data_dir, "--pretrain_dir", str(base / "experts")] + TINY
    pretrain.main(parse("pretrain", common + ["--pretrain_amount", "1", "--pretrain_epochs", "1",
                                              "--batch_real", "16"]))
    cond = common + ["--ipc", "1", "--niter", "2", "--eval_every", "0", "--num_premodel", "1", "--batch_real", "4",
                     "--eval_interval", "1", "--batch_size", "16"]
    DANCE.main(parse("condense", cond + ["--factor", "2", "--eval_epochs", "1", "--save_dir", str(base / "f2")]))
    DANCE.main(parse("condense", cond + ["--eval_epochs", "2", "--save_dir", str(base / "f1")]))
    return {"base": base, "data_dir": data_dir}


def test_every_saved_set_has_a_description_of_its_run(runs):
    run = runs["base"] / "f2"
    for k in (0, 2):
        desc = read_description(str(run / f"data_{k}.pt"))
        assert desc["run"]["iteration"] == k and desc["ipc"] == 1 and desc["image_shape"] == [3, 16, 16]
        assert desc["classes"] == ["class_0", "class_1", "class_2"]
        settings = desc["settings"]
        assert (settings["dataset"], settings["size"], settings["factor"], settings["decode_type"]) == \
            ("folder", 16, 2, "single")
        assert settings["width"] == 0.0625 and settings["eval_epochs"] == 1 and settings["eval_interval"] == 1
        assert settings["data_dir"] == os.path.abspath(runs["data_dir"])
        assert desc["run"]["seed"] == 1 and desc["run"]["method"]["num_premodel"] == 1
    # the set itself stays the official [data, targets] pair
    data, targets = torch.load(run / "data_2.pt", weights_only=True)
    assert data.shape == (3, 3, 16, 16) and targets.tolist() == [0, 1, 2]


def test_evaluate_needs_only_data_and_decodes_as_condensed(runs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = parse("evaluate", ["--data", str(runs["base"] / "f2" / "data_2.pt"), "--runs", "1", "--device", "cpu"])
    assert (args.dataset, args.size, args.factor, args.width, args.eval_epochs) == ("folder", 16, 2, 0.0625, 1)
    entry, = evaluate.main(args)
    # factor 2: each of the 3 storage images decodes into 4 training images
    assert entry["factor"] == 2 and entry["protocol"]["epochs"] == 1
    assert entry["network_config"]["config"]["width"] == 0.0625 and entry["condense_seed"] == 1


def test_a_flag_wins_over_the_protocol_but_may_not_contradict_the_set(runs):
    path = str(runs["base"] / "f2" / "data_2.pt")
    assert parse("evaluate", ["--data", path, "--eval_epochs", "7"]).eval_epochs == 7
    assert parse("evaluate", ["--data", path, "--width", "0.125"]).width == 0.125
    with pytest.raises(UserError, match="--factor 1 contradicts .*condensed with factor 2; drop --factor"):
        parse("evaluate", ["--data", path, "--factor", "1"])
    with pytest.raises(UserError, match="-d digits contradicts .*condensed with dataset folder"):
        parse("evaluate", ["--data", path, "-d", "digits"])


def test_sets_of_two_runs_keep_their_own_decoding_and_protocol(runs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    f1, f2 = str(runs["base"] / "f1" / "data_2.pt"), str(runs["base"] / "f2" / "data_2.pt")
    args = parse("evaluate", ["--data", f1, f2, "--runs", "1", "--device", "cpu"])
    assert args.set_settings[f1]["factor"] == 1 and args.set_settings[f2]["factor"] == 2
    entries = evaluate.main(args)
    assert [(e["factor"], e["protocol"]["epochs"]) for e in entries] == [(1, 2), (2, 1)]


def test_a_set_without_description_works_with_flags(runs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    official = tmp_path / "official.pt"
    data, targets = torch.load(runs["base"] / "f2" / "data_2.pt", weights_only=True)
    torch.save([data, targets], official)
    common = ["--data", str(official), "-d", "folder", "--size", "16", "--data_dir", runs["data_dir"]]
    args = parse("evaluate", common + ["--factor", "2"])
    assert args.factor == 2 and args.width == 1.0 and not args.set_settings


def test_a_broken_description_names_the_fix(runs, tmp_path):
    path = tmp_path / "set.pt"
    SyntheticSet(3, 1, 3, 16).save(str(path))
    with open(description_path(str(path)), "w") as f:
        f.write("{not json")
    with pytest.raises(UserError, match="delete it to evaluate .* with flags alone"):
        parse("evaluate", ["--data", str(path)])


def test_pixels_outside_unit_range_are_clamped_or_refused():
    warnings = []
    ok = checked_pixels(torch.tensor([-0.02, 0.5, 1.03]), "s.pt", warn=warnings.append)
    assert ok.tolist() == [0.0, 0.5, 1.0] and "clamped to [0, 1]" in warnings[0]
    quiet = []
    checked_pixels(torch.tensor([-1e-6, 1.0 + 1e-6]), "s.pt", warn=quiet.append)
    assert not quiet  # float noise
    with pytest.raises(UserError, match=r"pixels in \[0, 255\], not \[0, 1\]"):
        checked_pixels(torch.tensor([0.0, 255.0]), "s.pt")


def test_saved_sets_are_clamped_and_files_get_ordinary_modes(tmp_path):
    synset = SyntheticSet(2, 1, 1, 8, data=torch.full((2, 1, 8, 8), 1.2))
    old = os.umask(0o022)
    try:
        synset.save(str(tmp_path / "data_1.pt"), {"settings": {}})
        atomic_save({"x": 1}, str(tmp_path / "state.pt"))
        os.umask(0o002)
        atomic_save({"x": 1}, str(tmp_path / "shared.pt"))
    finally:
        os.umask(old)
    assert torch.load(tmp_path / "data_1.pt", weights_only=True)[0].max() == 1.0
    for name, mode in (("data_1.pt", 0o644), ("data_1.json", 0o644), ("state.pt", 0o644), ("shared.pt", 0o664)):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == mode, name


def record(seed, mean, method):
    return {"set": f"s{seed}.pt", "dataset": "folder", "ipc": 1, "factor": 1, "network": "convnet-3", "final": [mean],
            "mean": mean, "std": 0.0, "best_mean": mean, "condense_seed": seed, "method": method,
            "network_config": {}, "protocol": {}}


def test_summarize_groups_condensation_seeds_and_names_a_bad_line(tmp_path):
    path = tmp_path / "evaluations.jsonl"
    lines = [record(0, 50.0, {"lr_img": 0.1}), record(1, 54.0, {"lr_img": 0.1}), record(2, 90.0, {"lr_img": 0.2})]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    table = summarize(str(path))
    assert "Across condensation seeds" in table and "| 0, 1 | 52.00 +- 2.00 |" in table
    assert table.count("| 0, 1 |") == 1 and "| 2 |" not in table  # a lone seed is no group
    path.write_text(json.dumps(lines[0]) + "\n" + json.dumps({"key": "abc", "run": 0}) + "\n")
    with pytest.raises(UserError, match="line 2 of .* is not an evaluation record"):
        summarize(str(path))
    whole = json.dumps(lines[0]) + "\n" + json.dumps(lines[1]) + "\n"
    path.write_text(whole + json.dumps(lines[2])[:40])  # a write killed midway
    with pytest.raises(UserError, match=r"last line of .* was cut short .* the 2 record\(s\) before it are intact"):
        summarize(str(path))
    path.write_text(whole)
    assert "| 0, 1 | 52.00 +- 2.00 |" in summarize(str(path))


def test_summarize_groups_and_names_sets_by_their_alignment(tmp_path):
    path = tmp_path / "evaluations.jsonl"
    cf, mean = {"num_premodel": 5, "align": "cf"}, {"num_premodel": 5, "align": "mean"}
    lines = [record(0, 50.0, cf), record(1, 54.0, cf), record(0, 40.0, mean), record(1, 42.0, mean),
             record(2, 30.0, {"num_premodel": 0, "align": "mmd"})]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    table = summarize(str(path))
    seeds = table.split("Across condensation seeds")[1]
    assert "| DANCE (cf) |" in seeds and "| 0, 1 | 52.00 +- 2.00 |" in seeds
    assert "| DANCE |" in seeds and "| 0, 1 | 41.00 +- 1.00 |" in seeds  # the mean alignment: DANCE itself
    assert "| DM (mmd) |" in table.split("Across condensation seeds")[0]


@pytest.mark.parametrize("flags, message", [
    (["--runs", "0"], "--runs must be at least 1"),
    (["--lr", "nan"], "--lr must be a finite number"),
    (["--parallel", "-1"], "--parallel"),
    (["--labels", "soft", "--temperature", "0"], "--temperature"),
])
def test_a_bad_flag_is_the_flags_fault_not_the_descriptions(runs, flags, message):
    path = str(runs["base"] / "f2" / "data_2.pt")
    with pytest.raises(UserError) as e:
        parse("evaluate", ["--data", path] + flags)
    assert message in str(e.value) and "description" not in str(e.value) and ".json" not in str(e.value)


def test_a_bad_value_in_a_description_is_the_descriptions_fault(runs, tmp_path):
    path = tmp_path / "set.pt"
    source = str(runs["base"] / "f2" / "data_2.pt")
    torch.save(torch.load(source, weights_only=True), path)
    desc = read_description(source)
    desc["settings"]["eval_epochs"] = 0
    with open(description_path(str(path)), "w") as f:
        json.dump(desc, f)
    with pytest.raises(UserError, match=r"set.pt's description \(.*set.json\): --eval_epochs must be at least 1"):
        parse("evaluate", ["--data", str(path)])
    assert parse("evaluate", ["--data", str(path), "--eval_epochs", "3"]).eval_epochs == 3  # a flag wins


def test_soft_labels_default_to_the_sets_own_experts_and_records_name_the_teacher(runs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = str(runs["base"] / "f2" / "data_2.pt")
    experts = str(runs["base"] / "experts")
    assert read_description(path)["run"]["experts"]["folder"] == experts
    assert parse("evaluate", ["--data", path]).pretrain_dir == experts
    assert parse("evaluate", ["--data", path, "--pretrain_dir", str(tmp_path)]).pretrain_dir == str(tmp_path)
    args = parse("evaluate", ["--data", path, "--labels", "soft", "--runs", "1", "--device", "cpu", "--eval_epochs",
                              "1"])
    entry, = evaluate.main(args)
    assert entry["teacher"] == os.path.join(experts, "premodel0_trained.pth.tar")
    other = tmp_path / "other.pt"
    torch.save(torch.load(path, weights_only=True), other)
    desc = read_description(path)
    desc["run"]["experts"] = {"folder": str(tmp_path / "elsewhere"), "manifest": None}
    with open(description_path(str(other)), "w") as f:
        json.dump(desc, f)
    with pytest.raises(UserError, match="--labels soft: these sets were condensed with different experts"):
        parse("evaluate", ["--data", path, str(other), "--labels", "soft"])


def test_data_a_description_chose_and_that_is_gone_is_named_as_the_descriptions(runs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    source = str(runs["base"] / "f2" / "data_2.pt")
    moved = tmp_path / "set.pt"
    torch.save(torch.load(source, weights_only=True), moved)
    desc = read_description(source)
    desc["settings"]["data_dir"] = str(tmp_path / "gone")
    with open(description_path(str(moved)), "w") as f:
        json.dump(desc, f)
    with pytest.raises(UserError) as e:
        evaluate.main(parse("evaluate", ["--data", str(moved), "--runs", "1", "--device", "cpu"]))
    assert "not found under" in str(e.value) and f"come from {moved}'s description" in str(e.value)
    assert "give --data_dir where that data lives now" in str(e.value)


def test_a_description_that_disagrees_with_its_set_is_named_as_the_fault(tmp_path):
    from data.set_files import check_classes, check_ipc

    path = str(tmp_path / "s.pt")
    names = [str(c) for c in range(10)]
    with pytest.raises(UserError, match=r"s.pt's description \(.*s.json\) lists 4 classes, but the set is evaluated "
                                        r"on data with 10: fix or remove the description"):
        check_classes(path, {"classes": names[:4]}, names)
    with pytest.raises(UserError, match=r"class 3: 'x' in its description, .*s.json, '3' now"):
        check_classes(path, {"classes": names[:3] + ["x"] + names[4:]}, names)
    check_classes(path, {"classes": names}, names)
    check_classes(path, None, names)
    with pytest.raises(UserError, match=r"s.json\) says ipc 7, but the set holds 1 image\(s\) per class"):
        check_ipc(path, {"ipc": 7}, 1)
    check_ipc(path, {"ipc": 1}, 1)
