"""The held-out validation split used to choose data_best.pt."""
import pytest
import torch

from data.datasets import Split, holdout
from tests.fixtures import class_counts
from utils import UserError


def _split(counts):
    labels = torch.arange(len(counts)).repeat_interleave(torch.tensor(counts))
    return Split(torch.arange(len(labels), dtype=torch.uint8).view(-1, 1, 1, 1), labels)


def test_holdout_is_per_class_disjoint_and_seeded():
    labels = torch.arange(3).repeat_interleave(20)
    images = torch.arange(60, dtype=torch.uint8).view(60, 1, 1, 1)
    rest, val = holdout(Split(images, labels), 3, 0.1, seed=0)
    assert val.labels.bincount().tolist() == [2, 2, 2] and len(rest) == 54
    seen = set(rest.images.flatten().tolist()) | set(val.images.flatten().tolist())
    assert seen == set(range(60)) and not set(rest.images.flatten().tolist()) & set(val.images.flatten().tolist())
    again = holdout(Split(images, labels), 3, 0.1, seed=0)[1]
    assert torch.equal(again.images, val.images)
    assert not torch.equal(holdout(Split(images, labels), 3, 0.1, seed=1)[1].images, val.images)


def test_holdout_keeps_at_least_one_image_on_each_side():
    rest, val = holdout(_split([2, 4, 40]), 3, 0.01)  # 0.01 * 4 rounds to 0: still one held out
    assert class_counts(val, 3) == [1, 1, 1] and class_counts(rest, 3) == [1, 3, 39]
    rest, val = holdout(_split([2, 4]), 2, 0.9)  # 0.9 * 2 rounds to 2: one stays for training
    assert class_counts(val, 2) == [1, 3] and class_counts(rest, 2) == [1, 1]


def test_holdout_refuses_a_class_with_one_image():
    with pytest.raises(UserError) as e:
        holdout(_split([3, 1, 5]), 3, 0.05, class_names=("cat", "dog", "emu"))
    message = str(e.value)
    assert "\n" not in message
    for fragment in ("class 1 (dog)", "1 training image", "--val_split 0.05", "add images", "drop --val_split"):
        assert fragment in message, fragment
    with pytest.raises(UserError, match=r"class 2 has 0 training images"):
        holdout(_split([3, 3]), 3, 0.05)


def test_class_counts():
    assert class_counts(_split([2, 0, 5]), 4) == [2, 0, 5, 0]
