"""Fashion-MNIST: Table 1, FMNIST: 81.5 / 86.3 / 86.9 at IPC 1 / 10 / 50 (ConvNet-3); --reproduce: the
low-resolution recipe."""
from arguments.paper import LOW_RESOLUTION as REPRODUCE  # noqa: F401
