"""Every registered model at every dataset image size, plus hand-checked shapes and checkpoint keys."""
import pytest
import torch
import torch.nn.functional as F

from models import MODELS, model_config, reinitialize_
from tests.fixtures import build_model
from utils import UserError

# (channels, size) of every dataset: mnist/fashion, cifar/svhn, tinyimagenet, imagenet subsets,
# imagenet, digits.
SHAPES = [(1, 28), (3, 32), (3, 64), (3, 128), (3, 224), (1, 16)]
# Small widths keep the CPU run fast; a model missing here is still tested with its defaults.
SMALL = {"convnet": dict(depth=3, width=0.125), "resnet_ap": dict(depth=10, width=0.25),
         "resnet": dict(depth=10, width=0.25), "densenet": {}}
NCLASS = 5


def head(model):
    """The final Linear layer, whatever the model calls it."""
    return list(model.modules())[-1]


def features(net_type, channels, size, batch=1, **kw):
    """(logits, features) of a freshly built model on random input."""
    torch.manual_seed(0)
    model = build_model(net_type, NCLASS, channels, size, **kw)
    return model, model(torch.randn(batch, channels, size, size), return_features=True)


# DenseNet at 224x224 takes seconds on the CPU: the full suite only.
CASES = [pytest.param(n, c, s, id=f"{n}-{c}x{s}", marks=[pytest.mark.slow] if (n, s) == ("densenet", 224) else [])
         for n in MODELS for c, s in SHAPES]


@pytest.mark.parametrize("net_type,channels,size", CASES)
def test_forward_backward(net_type, channels, size):
    """Logit and feature shapes, no NaN, and a gradient for every parameter."""
    model, (logits, feat) = features(net_type, channels, size, batch=2, **SMALL.get(net_type, {}))
    assert logits.shape == (2, NCLASS)
    assert feat.shape == (2, head(model).in_features) == (2, model.feature_dim)
    assert torch.isfinite(logits).all() and torch.isfinite(feat).all()
    F.cross_entropy(logits, torch.arange(2)).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing


@pytest.mark.parametrize("channels,size,depth,dim", [(3, 32, 3, 2048), (1, 28, 3, 2048), (3, 64, 3, 8192),
                                                     (3, 128, 5, 2048), (1, 16, 3, 512)])
def test_convnet_feature_dim(channels, size, depth, dim):
    """128 * (S / 2^depth)^2 with S = size + 4 for grey-scale inputs (first conv pads by 3)."""
    model, (_, feat) = features("convnet", channels, size, depth=depth)
    assert head(model).in_features == feat.shape[1] == dim


@pytest.mark.parametrize("norm_type", ["instance", "batch", "layer", "group", "none"])
def test_convnet_norms(norm_type):
    """Every ConvNet norm runs, LayerNorm sized per block, also on padded grey-scale input."""
    for channels, size in [(3, 32), (1, 28)]:
        _, (logits, _) = features("convnet", channels, size, batch=2, width=0.125, norm_type=norm_type)
        assert torch.isfinite(logits).all()


def test_convnet_keys():
    """ConvNet-3-IN has exactly the official checkpoint keys."""
    sd = build_model("convnet", 10, 3, 32).state_dict()
    expected = {f"layers.{kind}.{d}.{p}" for kind in ("conv", "norm") for d in range(3)
                for p in ("weight", "bias")}
    assert set(sd) == expected | {"classifier.weight", "classifier.bias"}
    assert sd["layers.conv.0.weight"].shape == (128, 3, 3, 3)
    assert sd["layers.norm.2.weight"].shape == (128,)
    assert sd["classifier.weight"].shape == (10, 2048)
    plain = build_model("convnet", 10, 3, 32, norm_type="none").state_dict()
    assert not any(k.startswith("layers.norm") for k in plain)


def test_resnet_ap_keys_and_dims():
    """ResNetAP-10 key names and shapes as in the official code; 512-d features at width 1."""
    model, (_, feat) = features("resnet_ap", 3, 32, depth=10)
    assert feat.shape == (1, 512)
    sd = model.state_dict()
    assert sd["layer0.conv1.weight"].shape == (64, 3, 3, 3)
    assert sd["layer0.bn1.weight"].shape == (64,)
    assert sd["layer1.0.conv2.weight"].shape == (64, 64, 3, 3)
    assert sd["layer2.0.downsample.0.weight"].shape == (128, 64, 1, 1)
    assert sd["layer2.0.downsample.2.weight"].shape == (128,)
    assert sd["layer4.0.bn2.bias"].shape == (512,)
    assert sd["fc.weight"].shape == (NCLASS, 512)
    assert "layer1.0.downsample.0.weight" not in sd and "layer0.conv1.bias" not in sd
    large = build_model("resnet_ap", 10, 3, 224, depth=10).state_dict()
    assert large["layer0.conv1.weight"].shape == (64, 3, 7, 7)
    assert "layer0.conv1.bias" in build_model("resnet_ap", 10, 3, 32, depth=10, norm_type="none").state_dict()
    assert build_model("resnet_ap", 10, 3, 32, depth=20, cifar_layout=True).fc.in_features == 256


def test_other_dims():
    """ResNet-18 is 512-d, ResNet-50 2048-d, DenseNet-CIFAR 384-d."""
    assert build_model("resnet", 10, 3, 32, depth=18).fc.in_features == 512
    assert build_model("resnet", 10, 3, 32, depth=50).fc.in_features == 2048
    assert build_model("densenet", 10, 3, 32).linear.in_features == 384


@pytest.mark.parametrize("norm_type", ["instance", "batch", "none", "sn"])
def test_resnet_ap_norms(norm_type):
    """Every ResNetAP norm runs forward and backward."""
    _, (logits, _) = features("resnet_ap", 3, 32, batch=2, depth=10, width=0.125, norm_type=norm_type)
    logits.sum().backward()
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("net_type,kw", [
    ("nope", {}), ("convnet", dict(norm_type="sn")), ("resnet", dict(norm_type="none")),
    ("resnet_ap", dict(depth=11)), ("resnet_ap", dict(depth=4, cifar_layout=True)),
    ("convnet", dict(depth=6, size=16)), ("resnet_ap", dict(size=4)), ("densenet", dict(size=4)),
])
def test_user_errors(net_type, kw):
    """Bad names, norms, depths and sizes are UserErrors naming what is valid."""
    args = dict(nclass=10, channels=3, size=32) | kw
    with pytest.raises(UserError):
        build_model(net_type, **args)


def test_unknown_name_lists_valid():
    """The message for an unknown net_type lists the registry."""
    with pytest.raises(UserError, match="convnet, resnet_ap, resnet, densenet"):
        build_model("vgg", 10, 3, 32)


def test_seeded_builds_match():
    """Two ConvNets built under the same seed are identical."""
    torch.manual_seed(3)
    a = build_model("convnet", 10, 3, 32).state_dict()
    torch.manual_seed(3)
    b = build_model("convnet", 10, 3, 32).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_model_config_rebuilds():
    """model_config keeps only the arguments a model takes, and rebuilds the same architecture."""
    assert model_config("densenet", 10, 3, 32) == dict(nclass=10, channels=3, size=32)
    assert "cifar_layout" not in model_config("convnet", 10, 3, 32)
    config = model_config("resnet_ap", 10, 3, 64, depth=18, width=0.5)
    a, b = MODELS["resnet_ap"](**config), build_model("resnet_ap", 10, 3, 64, depth=18, width=0.5)
    assert {k: v.shape for k, v in a.state_dict().items()} == {k: v.shape for k, v in b.state_dict().items()}


@pytest.mark.parametrize("net_type, kw", [("convnet", dict(depth=3, width=0.125)),
                                          ("convnet", dict(depth=2, width=0.125, norm_type="batch")),
                                          ("resnet_ap", dict(depth=10, width=0.25)),
                                          ("resnet", dict(depth=18, width=0.25, norm_type="batch")), ("densenet", {})])
def test_reinitialize_draws_what_a_new_model_draws(net_type, kw):
    """Plain DM redraws one network in place: from the same random state, the weights of a new model."""
    torch.manual_seed(5)
    fresh = build_model(net_type, NCLASS, 3, 32, **kw).state_dict()
    torch.manual_seed(9)
    reused = build_model(net_type, NCLASS, 3, 32, **kw)
    torch.manual_seed(5)
    assert reinitialize_(reused)
    assert all(torch.equal(fresh[k], v) for k, v in reused.state_dict().items())


def test_reinitialize_declines_spectral_norm():
    model = build_model("resnet_ap", NCLASS, 3, 32, depth=10, width=0.25, norm_type="sn")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert not reinitialize_(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
