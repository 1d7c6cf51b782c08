"""The held-out validation split used to choose data_best.pt."""
import torch

from data.datasets import Split, holdout


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


def test_holdout_keeps_one_image_classes_for_training():
    rest, val = holdout(Split(torch.zeros(3, 1, 1, 1, dtype=torch.uint8), torch.tensor([0, 1, 1])), 2, 0.5)
    assert rest.labels.tolist() == [0, 1] and val.labels.tolist() == [1]
