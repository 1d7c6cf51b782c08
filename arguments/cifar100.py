"""CIFAR-100: Table 1, C100: 27.9 / 49.8 / 52.8 at IPC 1 / 10 / 50 (ConvNet-3); --reproduce: the low-resolution
recipe."""
from arguments.paper import LOW_RESOLUTION as REPRODUCE  # noqa: F401
