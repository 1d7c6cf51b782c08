"""DD-Ranking's formulas (reports/dd_ranking.py) and soft-label training (training/recipe.py,
training/vectorised.py) on hand-computed cases."""
import pytest
import torch
from torch import nn

from data.datasets import Split
from reports.dd_ranking import dd_ranking_scores, label_robust_score, random_subsets, score_table
from training.recipe import Recipe, soft_label_loss, train_epoch
from training.vectorised import StackedNetworks, train_epoch_many

# (e^a - e^-1) / (e - e^-1) worked out by hand for a = 0, 0.065 and 0.06
LRS_AT_0, LRS_AT_0065, LRS_AT_006 = 0.2689414, 0.2975148, 0.2952503
# 0.75 ln(0.75 / 0.5) + 0.25 ln(0.25 / 0.5): teacher logits (ln 3, 0), student (0, 0), T = 1
KL_T1 = 0.1308120
# T = 2: teacher (ln 3 / 2, 0) -> q = (r, 1 - r), r = sqrt(3) / (sqrt(3) + 1); 4 * (r ln 2r + (1 - r) ln 2(1 - r))
KL_T2 = 0.1453631


def test_label_robust_score_hand_values():
    assert label_robust_score(0.0, 0.0) == pytest.approx(LRS_AT_0, abs=1e-7)  # = 1 / (e + 1)
    assert label_robust_score(1.0, -1.0) == pytest.approx(1.0)  # a = 1: the top of the scale
    assert label_robust_score(-1.0, 1.0) == pytest.approx(0.0, abs=1e-12)  # a = -1: the bottom
    assert label_robust_score(0.2, 0.0, lam=0.25) == pytest.approx(label_robust_score(0.0, -0.2 / 3, lam=0.25))


def test_scores_pair_runs_in_fractions_with_population_std():
    score = dd_ranking_scores(syn=[93.0, 95.0], random=[75.0, 80.0], syn_hard=[93.0, 95.0], full=98.0)
    assert score["ior"]["runs"] == pytest.approx([0.18, 0.15])
    assert score["ior"]["mean"] == pytest.approx(0.165) and score["ior"]["std"] == pytest.approx(0.015)
    assert score["hlr"]["runs"] == pytest.approx([0.05, 0.03])
    assert score["hlr"]["mean"] == pytest.approx(0.04) and score["hlr"]["std"] == pytest.approx(0.01)
    # a = 0.5 * 0.18 - 0.5 * 0.05 = 0.065 and 0.5 * 0.15 - 0.5 * 0.03 = 0.06
    assert score["lrs"]["runs"] == pytest.approx([LRS_AT_0065, LRS_AT_006], abs=1e-7)
    assert score["lrs"]["mean"] == pytest.approx((LRS_AT_0065 + LRS_AT_006) / 2, abs=1e-7)
    assert score["lrs"]["std"] == pytest.approx((LRS_AT_0065 - LRS_AT_006) / 2, abs=1e-7)
    assert score["acc"] == pytest.approx({"set": 0.94, "random": 0.775, "set_hard": 0.94, "full": 0.98})


def test_soft_label_scores_take_hlr_from_the_hard_label_runs():
    score = dd_ranking_scores(syn=[97.0], random=[90.0], syn_hard=[91.0], full=99.0)
    assert score["ior"]["runs"] == pytest.approx([0.07]) and score["hlr"]["runs"] == pytest.approx([0.08])
    table = score_table([{"set": "s.pt", "dataset": "digits", "ipc": 1, "network": "convnet-3", "labels": "soft",
                          "score": score}])
    assert "| s.pt | digits | 1 | convnet-3 | soft | 1 | 0.9700 | 0.9000 | 0.9900 | +0.0700 +- 0.0000 |" in table
    with pytest.raises(ValueError, match="as many runs"):
        dd_ranking_scores([90.0, 91.0], [80.0], [90.0, 91.0], 99.0)


def test_random_subsets_are_per_class_redrawn_per_run_and_reproducible():
    labels = torch.arange(30) % 3
    train = Split((torch.arange(30) * 8).to(torch.uint8).view(30, 1, 1, 1).expand(30, 1, 2, 2).contiguous(), labels)
    draw = random_subsets(train, 3, 4, seed=7, device="cpu")
    images, subset_labels = draw(0)
    assert images.shape == (12, 1, 2, 2) and images.dtype == torch.float32
    assert subset_labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    positions = (images[:, 0, 0, 0] * 255 / 8).round().long()
    assert (positions % 3 == subset_labels).all() and len(set(positions.tolist())) == 12  # right class, no repeat
    torch.manual_seed(123)  # the global stream does not matter
    assert torch.equal(draw(0)[0], images) and not torch.equal(draw(1)[0], images)


class Constant(nn.Module):
    """A 'network' whose logits are a fixed vector plus a zero-initialised linear map of the image."""

    def __init__(self, logits, pixels):
        super().__init__()
        self.linear = nn.Linear(pixels, len(logits))
        nn.init.zeros_(self.linear.weight)
        with torch.no_grad():
            self.linear.bias.copy_(torch.tensor(logits))

    def forward(self, x):
        return self.linear(x.flatten(1))


def test_soft_label_loss_matches_hand_computed_kl():
    student, teacher = torch.zeros(3, 2), torch.tensor([[torch.log(torch.tensor(3.0)).item(), 0.0]] * 3)
    assert soft_label_loss(student, teacher, 1.0).item() == pytest.approx(KL_T1, abs=1e-6)
    assert soft_label_loss(student, teacher, 2.0).item() == pytest.approx(KL_T2, abs=1e-6)
    stacked = soft_label_loss(torch.zeros(2, 3, 2), teacher.expand(2, 3, 2), 2.0)
    assert stacked.shape == (2,) and stacked.tolist() == pytest.approx([KL_T2, KL_T2], abs=1e-6)
    assert soft_label_loss(teacher, teacher, 4.0).item() == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("mix_p", [0.0, 1.0])
def test_training_step_uses_the_teachers_soft_labels(mix_p):
    """One epoch of one batch: the returned loss is the loss before the step, T^2 KL against the teacher's logits
    on the (mixed) batch, not cross-entropy with the labels (ln 2 for a uniform student)."""
    images, labels = torch.rand(4, 1, 4, 4), torch.tensor([0, 1, 0, 1])
    teacher = Constant([torch.log(torch.tensor(3.0)).item(), 0.0], 16).eval()
    recipe = Recipe(epochs=1, lr=0.1, batch_size=4, dsa_strategy="", mix_p=mix_p, teacher=teacher, temperature=2.0)
    student = Constant([0.0, 0.0], 16)
    loss, _ = train_epoch(student, torch.optim.SGD(student.parameters(), lr=0.1), images, labels, (0.5,), (0.25,),
                          recipe, "cpu")
    assert loss == pytest.approx(KL_T2, abs=1e-6)
    assert student.linear.bias[0] > 0  # the step moved the student towards the teacher's first class
    hard = Recipe(epochs=1, lr=0.1, batch_size=4, dsa_strategy="", mix_p=mix_p)
    student = Constant([0.0, 0.0], 16)
    loss, _ = train_epoch(student, torch.optim.SGD(student.parameters(), lr=0.1), images, labels, (0.5,), (0.25,),
                          hard, "cpu")
    assert loss == pytest.approx(0.6931472, abs=1e-6)


def test_networks_trained_at_once_use_the_teachers_soft_labels():
    images, labels = torch.rand(4, 1, 4, 4), torch.tensor([0, 1, 0, 1])
    teacher = Constant([torch.log(torch.tensor(3.0)).item(), 0.0], 16).eval()
    recipe = Recipe(epochs=1, lr=0.1, batch_size=4, dsa_strategy="", mix_p=0.5, teacher=teacher, temperature=2.0)
    net = StackedNetworks([Constant([0.0, 0.0], 16), Constant([0.0, 0.0], 16)], "cpu")
    optimizer = torch.optim.SGD(list(net.params.values()), lr=0.1)
    losses, _ = train_epoch_many(net, optimizer, images, labels, (0.5,), (0.25,), recipe, "cpu")
    assert losses == pytest.approx([KL_T2, KL_T2], abs=1e-6)


def test_a_hard_label_recipe_records_what_it_did_before_soft_labels():
    hard = Recipe(epochs=3).as_dict()
    assert "labels" not in hard and "temperature" not in hard and "teacher" not in hard
    soft = Recipe(epochs=3, teacher=nn.Identity(), temperature=3.0).as_dict()
    assert soft == {**hard, "labels": "soft", "temperature": 3.0}
