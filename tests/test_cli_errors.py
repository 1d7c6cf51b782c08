"""Bad input through the command line: one line naming the problem and the fix, exit status 2."""
import os
import subprocess
import sys

import pytest
import torch

from tests.fixtures import build_model, write_imagenet_subset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.slow  # every case starts a script in a process of its own


def run(script, *argv, cwd):
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *argv, "--device", "cpu"], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def assert_user_error(out, *fragments):
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_unknown_dataset_and_model_list_valid_names(tmp_path):
    assert_user_error(run("DANCE.py", "-d", "cifar11", cwd=tmp_path), "cifar11", "cifar10, cifar100")
    assert_user_error(run("pretrain.py", "--net_type", "vgg", cwd=tmp_path), "vgg", "resnet_ap")


def test_missing_dataset_files_name_layout_and_download(tmp_path):
    assert_user_error(run("pretrain.py", "-d", "cifar10", "--data_dir", str(tmp_path), cwd=tmp_path),
                      "cifar-10-batches-py", "--download")


def test_missing_subset_class_folder_names_the_wnid(tmp_path):
    root = write_imagenet_subset(str(tmp_path / "nette"), "imagenette")
    import shutil
    shutil.rmtree(os.path.join(root, "train", "n03888257"))
    assert_user_error(run("pretrain.py", "-d", "imagenette", "--data_dir", root, cwd=tmp_path), "n03888257")


def test_missing_experts_print_the_pretrain_command(tmp_path):
    out = run("DANCE.py", "-d", "digits", "--pretrain_dir", str(tmp_path / "none"), cwd=tmp_path)
    assert_user_error(out, "premodel0", "python pretrain.py -d digits")
    assert not (tmp_path / "results").exists()  # nothing written by a refused run


def test_mismatched_expert_names_first_key_and_shapes(tmp_path):
    folder = tmp_path / "experts"
    folder.mkdir()
    wrong = build_model("convnet", 10, 1, 16, depth=3, width=0.125)
    for i in range(2):
        for stage in ("init", "trained"):
            torch.save(wrong.state_dict(), folder / f"premodel{i}_{stage}.pth.tar")
    out = run("DANCE.py", "-d", "digits", "--width", "0.25", "--num_premodel", "2", "--pretrain_dir", str(folder),
              cwd=tmp_path)
    assert_user_error(out, "layers.conv.0.weight", "(16, 1, 3, 3)", "(32, 1, 3, 3)")


def test_ipc_and_factor_below_one(tmp_path):
    assert_user_error(run("DANCE.py", "--ipc", "0", cwd=tmp_path), "--ipc must be at least 1")
    assert_user_error(run("evaluate.py", "--factor", "0", cwd=tmp_path), "--factor must be at least 1")


@pytest.mark.parametrize("content, fragment", [
    ("pair", "not a [data, targets] pair"),
    ("shape", "needs (1, 16, 16)"),
    ("truncated", "corrupt"),
    ("code", "corrupt"),
])
def test_bad_data_files(tmp_path, content, fragment):
    path = tmp_path / "set.pt"
    if content == "pair":
        torch.save({"data": torch.zeros(10, 1, 16, 16)}, path)
    elif content == "shape":
        torch.save([torch.zeros(10, 3, 32, 32), torch.arange(10)], path)
    elif content == "truncated":
        torch.save([torch.zeros(10, 1, 16, 16), torch.arange(10)], path)
        path.write_bytes(path.read_bytes()[:200])
    else:  # a pickle that would run code on load must be refused
        torch.save([torch.zeros(10, 1, 16, 16), torch.arange(10), Exploit()], path)
    assert_user_error(run("evaluate.py", "-d", "digits", "--data", str(path), cwd=tmp_path), fragment)
    assert not (tmp_path / "pwned").exists()


class Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))
