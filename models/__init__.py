"""Model registry: every network takes (nclass, channels, size, ...) and has forward(x, return_features).

A network is described by `{"net_type": name, "config": constructor kwargs}` (`network_config`), the value the
scripts pass around and the expert manifest stores; `make_network` builds it from MODELS, the only place a
net_type string is interpreted. State_dict keys and shapes match the official code, so checkpoints load both ways.
"""
import inspect

import torch

from models.compilation import compiled  # noqa: F401 - the one way networks are compiled
from models.convnet import ConvNet
from models.densenet import DenseNet
from models.resnet import ResNet
from models.resnet_ap import ResNetAP
from utils import UserError

MODELS = {"convnet": ConvNet, "resnet_ap": ResNetAP, "resnet": ResNet, "densenet": DenseNet}


def model_config(net_type, nclass, channels, size, depth=3, width=1.0, norm_type="instance",
                 cifar_layout=False):
    """The constructor kwargs of MODELS[net_type], keeping only the arguments that model takes."""
    if net_type not in MODELS:
        raise UserError(f"unknown net_type {net_type!r}; valid: {', '.join(MODELS)}")
    if size < 1 or channels < 1 or nclass < 1:
        raise UserError(f"nclass, channels and size must be positive, got {nclass}, {channels}, {size}")
    given = dict(nclass=nclass, channels=channels, size=size, depth=depth, width=width,
                 norm_type=norm_type, cifar_layout=cifar_layout)
    # e.g. DenseNet is a fixed architecture and ConvNet has no cifar layout: they drop those keys.
    accepted = inspect.signature(MODELS[net_type]).parameters
    return {k: v for k, v in given.items() if k in accepted}


def network_config(net_type, depth, width, norm_type, info):
    """The description of a network of `net_type` for the data `info` describes: {'net_type', 'config'}."""
    config = model_config(net_type, info.nclass, info.channels, info.size, depth, width, norm_type, info.cifar_layout)
    return {"net_type": net_type, "config": config}


def make_network(network, device):
    """A freshly initialised network of `network_config`'s description, on `device`."""
    return MODELS[network["net_type"]](**network["config"]).to(device)


def reinitialize_(model):
    """Draw fresh initial weights into `model` in place (no new module, nothing copied to the device).

    The draws are those a newly built model would take from the same random state; False for models
    whose construction draws more than their layers' resets (spectral norm's vectors): build those anew.
    """
    if any(hasattr(m, "weight_orig") for m in model.modules()):
        return False
    if hasattr(model, "reset_parameters"):
        model.reset_parameters()
    else:
        for m in model.modules():
            if m is not model and hasattr(m, "reset_parameters"):
                m.reset_parameters()
    return True


def network_probe(network):
    """The network built on the meta device (no memory, no random draws), to inspect its layers."""
    with torch.device("meta"):
        return make_network(network, "meta")


def check_network(network):
    """Build the network on the meta device: a bad width, depth or size raises its UserError before any work."""
    network_probe(network)


FLAG_OF = {"net_type": "--net_type", "depth": "--depth", "width": "--width", "norm_type": "--norm_type",
           "size": "--size", "channels": "image channels (-d, the data)", "nclass": "classes (-d, the data)",
           "cifar_layout": "ResNet stem (-d, the data)"}


def network_difference(have, need):
    """'--width: 0.25 vs 1.0' for the first setting in which two network descriptions differ, or None."""
    if have.get("net_type") != need.get("net_type"):
        return f"--net_type: {have.get('net_type')} vs {need.get('net_type')}"
    a, b = have.get("config", {}), need.get("config", {})
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            return f"{FLAG_OF.get(key, key)}: {a.get(key)} vs {b.get(key)}"
    return None
