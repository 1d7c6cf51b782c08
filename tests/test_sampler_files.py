"""File-backed real batches (ImageNet): per-class streams, the next class decoded in the background, exact resume."""
import torch

import tests.fixtures as F
from data.datasets import load_dataset
from data.sampler import ClassSampler


def batches(sampler, order):
    return [sampler.sample(c) for c in order]


def test_prefetch_changes_no_batch_and_each_class_stream_ignores_the_others(tmp_path):
    root = F.write_imagenet(tmp_path, nclass=10, n_train_per_class=4)
    train, _, _ = load_dataset("imagenet", root, nclass=10, size=16)
    order = [0, 1, 2, 0, 1, 2, 0]  # class 0 passes its 4 images twice: a new permutation is drawn
    torch.manual_seed(5)
    plain = batches(ClassSampler(train, 10, 3, "cpu", prefetch=False), order)
    torch.manual_seed(5)
    fetched = ClassSampler(train, 10, 3, "cpu")
    ahead = batches(fetched, order)
    assert all(torch.equal(a, b) for a, b in zip(plain, ahead))
    assert 1 in fetched._ahead  # class 1's next batch was drawn and decoded behind class 0's
    torch.manual_seed(5)
    zeros = batches(ClassSampler(train, 10, 3, "cpu", prefetch=False), [0, 0, 0])  # no other class drawn between
    assert all(torch.equal(a, b) for a, b in zip(zeros, [plain[0], plain[3], plain[6]]))
    labels_of = {tuple(train.images[i].flatten()[:8].tolist()): int(train.labels[i]) for i in range(len(train))}
    for c, batch in zip(order, plain):  # every image of a batch belongs to its class
        assert len(batch) == 3 and batch.dtype == torch.float32 and 0 <= batch.min() and batch.max() <= 1
        assert {labels_of[tuple((x * 255).round().to(torch.uint8).flatten()[:8].tolist())] for x in batch} == {c}


def test_resume_mid_prefetch_draws_the_same_batches(tmp_path):
    root = F.write_imagenet(tmp_path, nclass=10, n_train_per_class=4)
    train, _, _ = load_dataset("imagenet", root, nclass=10, size=16)
    torch.manual_seed(1)
    whole = ClassSampler(train, 10, 2, "cpu")
    expected = batches(whole, [0, 1, 2, 0, 1, 2])
    torch.manual_seed(1)
    first = ClassSampler(train, 10, 2, "cpu")
    got = batches(first, [0, 1, 2])
    state = first.state_dict()  # class 0's next batch already drawn ahead
    torch.manual_seed(99)  # the resumed process's global stream is elsewhere
    second = ClassSampler(train, 10, 2, "cpu")
    second.load_state_dict(state)
    got += batches(second, [0, 1, 2])
    assert all(torch.equal(a, b) for a, b in zip(expected, got))
    real, groups = second.sample_all()
    assert real.shape[0] == 20 and groups.tolist() == sorted(groups.tolist())


def test_all_classes_prefetched_for_the_next_joint_step_change_no_batch(tmp_path):
    root = F.write_imagenet(tmp_path, nclass=10, n_train_per_class=4)
    train, _, _ = load_dataset("imagenet", root, nclass=10, size=16)
    plain = ClassSampler(train, 10, 3, "cpu", prefetch=False)
    fetched = ClassSampler(train, 10, 3, "cpu")
    expected = [plain.sample_all()[0] for _ in range(3)]
    got = [fetched.sample_all()[0] for _ in range(2)]
    assert sorted(fetched._ahead) == list(range(10))  # the next step's batches are on their way
    resumed = ClassSampler(train, 10, 3, "cpu")
    resumed.load_state_dict(fetched.state_dict())  # batches drawn ahead are drawn again
    got.append(resumed.sample_all()[0])
    assert all(torch.equal(a, b) for a, b in zip(expected, got))
