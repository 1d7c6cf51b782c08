"""--compile: the compiled networks compute what the eager ones do (up to float order), in every place they run.

torch.compile fuses operators, so results agree to float tolerance, not bit for bit. One module-scoped set of
tiny networks keeps the compilations (tens of seconds each on the CPU) to a few for the whole file.
"""
import shutil

import pytest
import torch

import DANCE
import pretrain
from condense.encoders import ExpertBank
from condense.expert_folder import checkpoint_path
from condense.updates import SCHEDULES, UpdateSettings
from arguments import parse
from data.augment import DiffAug, normalize
from data.datasets import Split
from data.sampler import ClassSampler
from data.synthetic import SyntheticSet
from models import compiled, make_network, model_config
from tests.fixtures import build_model
from tests.fixtures import write_fixture
from training.recipe import Recipe, fit
from training.vectorised import fit_many
from utils import atomic_save, seed_everything

pytestmark = pytest.mark.skipif(not any(shutil.which(c) for c in ("c++", "g++", "clang++")),
                                reason="torch.compile needs a C++ compiler on the CPU")


def tiny(seed):
    seed_everything(seed)
    return build_model("convnet", 3, 3, 16, depth=2, width=1 / 16)


def data(n=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return Split(torch.rand(n, 3, 16, 16, generator=g), torch.arange(n) % 3)


def trained(models, compile, many):
    train, test = data(), data(6, 1)
    recipe = Recipe(epochs=2, batch_size=4, dsa_strategy="crop_flip", mix_p=0.5, compile=compile)
    seed_everything(7)
    if many:
        fit_many(models, train.images, train.labels, test, (0.5,) * 3, (0.25,) * 3, recipe, "cpu")
    else:
        for m in models:
            fit(m, train.images, train.labels, test, (0.5,) * 3, (0.25,) * 3, recipe, "cpu")
    return [m.state_dict() for m in models]


@pytest.mark.slow
@pytest.mark.parametrize("many", [False, True], ids=["fit", "fit_many"])
def test_compiled_training_gives_the_eager_weights(many):
    eager = trained([tiny(0), tiny(1)], compile=False, many=many)
    fast = trained([tiny(0), tiny(1)], compile=True, many=many)
    for a, b in zip(eager, fast):
        for k in a:
            torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5, msg=k)


def test_recipe_records_leave_compile_out():
    assert "compile" not in Recipe(1, compile=True).as_dict()  # a manifest's recipe does not change with it


@pytest.mark.slow
def test_compiled_condensation_step_gives_the_eager_set(tmp_path):
    network = {"net_type": "convnet", "config": model_config("convnet", 3, 3, 16, 2, 1 / 16)}
    for stage in ("init", "trained"):
        seed_everything(0 if stage == "init" else 1)
        atomic_save(make_network(network, "cpu").state_dict(), checkpoint_path(str(tmp_path), 0, stage))
    train = data(30)
    dsa = DiffAug("color_crop", batch=True)
    settings = UpdateSettings(batch_syn_max=200, iter_calib=1, precision="fp32", class_chunk=0)

    def aug(x, groups=None):
        return dsa(normalize(x, (0.5,) * 3, (0.25,) * 3), groups)

    sets = []
    for compile in (False, True):
        bank = ExpertBank(str(tmp_path), 1, network, torch.device("cpu"), "", compile=compile)
        assert (bank.expert(0) is bank.experts[0]) != compile
        seed_everything(3)
        sampler = ClassSampler(train, 3, 4, torch.device("cpu"))
        synset = SyntheticSet(3, 1, 3, 16, 2, "single", torch.device("cpu"))
        synset.init("noise", sampler)
        optimizer = torch.optim.SGD([synset.data], lr=0.1, momentum=0.5)
        for k in range(3):
            for align, calibrate in (SCHEDULES["per_class"], SCHEDULES["joint"]):
                align(synset, sampler, bank.middle(0, 0.2 * k), aug, optimizer, settings)
                calibrate(synset, bank.expert(0), aug, optimizer, settings)
        sets.append(synset.data.detach().clone())
    torch.testing.assert_close(sets[1], sets[0], rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_compiled_module_shares_the_parameters_written_in_place():
    net = tiny(0).requires_grad_(False)
    run = compiled(net, True)
    x = torch.rand(2, 3, 16, 16)
    for p in net.parameters():
        p.mul_(0.5)  # what ExpertBank.middle does between iterations
    torch.testing.assert_close(run(x), net(x), rtol=1e-4, atol=1e-5)
    assert compiled(net, False) is net


@pytest.mark.slow
def test_compile_end_to_end_through_the_scripts(tmp_path):
    data_dir = write_fixture("folder", str(tmp_path / "data"))
    common = ["-d", "folder", "--size", "16", "--data_dir", data_dir, "--width", "0.0625", "--device", "cpu",
              "--pretrain_dir", str(tmp_path / "experts"), "--compile"]
    pretrain.main(parse("pretrain", common + ["--pretrain_amount", "1", "--pretrain_epochs", "1"]))
    synset = DANCE.main(parse("condense", common + ["--ipc", "1", "--niter", "2", "--eval_every", "2", "--num_premodel", "1",
                                                    "--eval_runs", "2", "--eval_epochs", "2",
                                                    "--save_dir", str(tmp_path / "run")]))
    assert torch.isfinite(synset.data).all() and (tmp_path / "run" / "data_2.pt").exists()
