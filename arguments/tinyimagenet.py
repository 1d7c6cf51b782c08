"""Tiny-ImageNet: Table 1, Tiny: 11.6 / 26.4 / 28.9 at IPC 1 / 10 / 50 (ConvNet-3 at 64x64); --reproduce: the
low-resolution recipe."""
from arguments.paper import LOW_RESOLUTION as REPRODUCE  # noqa: F401
