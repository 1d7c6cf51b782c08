"""MNIST: not in the paper's tables; --reproduce: the low-resolution recipe, as the official code ships it."""
from arguments.paper import LOW_RESOLUTION as REPRODUCE  # noqa: F401
