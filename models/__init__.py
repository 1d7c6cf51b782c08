"""Model registry: every network takes (nclass, channels, size, ...) and has forward(x, return_features).

`build_model` is the only place a net_type string is interpreted. A manifest can store
`{"net_type": name, "config": model_config(...)}` and rebuild with `MODELS[name](**config)`;
state_dict keys and shapes match the official code, so checkpoints load both ways.
"""
import inspect

from models.convnet import ConvNet
from models.densenet import DenseNet
from models.resnet import ResNet
from models.resnet_ap import ResNetAP
from utils import UserError

MODELS = {"convnet": ConvNet, "resnet_ap": ResNetAP, "resnet": ResNet, "densenet": DenseNet}


def model_names():
    """The registered net_type names."""
    return list(MODELS)


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


def build_model(net_type, nclass, channels, size, depth=3, width=1.0, norm_type="instance",
                cifar_layout=False):
    """A freshly initialised network; a bad name, depth, norm or size raises UserError."""
    config = model_config(net_type, nclass, channels, size, depth, width, norm_type, cifar_layout)
    return MODELS[net_type](**config)
