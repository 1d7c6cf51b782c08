"""ImageYellow (128x128): Table 2, 51.8 / 78.8 at IPC 1 / 10 (ConvNet-5); --reproduce: the ImageNet-subset recipe."""
from arguments.paper import IMAGENET_SUBSET_SETTINGS as SETTINGS, IMAGENET_SUBSETS as REPRODUCE  # noqa: F401
