"""CIFAR-10: Table 1, C10: 47.1 / 70.8 / 76.1 at IPC 1 / 10 / 50 (ConvNet-3); --reproduce: the low-resolution recipe."""
from arguments.paper import LOW_RESOLUTION as REPRODUCE  # noqa: F401
