"""The README's commands, copied as a user would, run in order on digits: the step-by-step section and the DD-Ranking
scores section, with only flags added that make them small (fewer experts and epochs, smaller real batches). Paths
and folder names the README states must be the ones the commands create."""
import os
import re
import shlex

import pytest

import DANCE
import evaluate
import pretrain
from arguments import parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = {"pretrain.py": ("pretrain", pretrain.main), "DANCE.py": ("condense", DANCE.main),
           "evaluate.py": ("evaluate", evaluate.main)}
SMALL = {"pretrain.py": ["--pretrain_amount", "1", "--pretrain_epochs", "1"],
         "DANCE.py": ["--num_premodel", "1", "--batch_real", "8", "--eval_every", "0", "--eval_epochs", "1"],
         "evaluate.py": ["--eval_epochs", "1"]}


def readme_commands(section):
    """The `python <script> ...` lines of the README's code blocks in `section` (up to the next heading or bold
    paragraph title), comments dropped."""
    text = open(os.path.join(ROOT, "README.md")).read()
    start = text.index(section)
    end = min(i for i in (text.find("\n## ", start + 1), text.find("\n**", start + 1), len(text)) if i > 0)
    lines = re.findall(r"^    python (\S+\.py) (.*)$", text[start:end], flags=re.M)
    return [(script, shlex.split(rest.split(" #")[0])) for script, rest in lines]


@pytest.mark.slow
def test_the_readmes_commands_work_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    steps = readme_commands("## Step by step") + readme_commands("**Measured on digits**")
    assert [s for s, _ in steps] == ["pretrain.py", "DANCE.py", "evaluate.py", "DANCE.py", "evaluate.py",
                                     "evaluate.py"]
    for script, argv in steps:
        kind, main = SCRIPTS[script]
        main(parse(kind, argv + SMALL[script] + ["--device", "cpu"]))
    text = open(os.path.join(ROOT, "README.md")).read()
    stated = re.search(r"trains the experts into `(results/experts/[^`]+)/`", text).group(1)
    assert os.path.isfile(os.path.join(stated, "manifest.json")), stated  # the folder the README names
    for run in ("digits_ipc10", "digits_ipc1"):
        assert os.path.isfile(os.path.join("results", "condense", run, "data_200.pt"))
    records = open(os.path.join("results", "evaluations.jsonl")).read().splitlines()
    assert len(records) == 1 + 3 + 2  # the ipc-10 set; the ipc-1 set with its references; soft labels + HLR's
