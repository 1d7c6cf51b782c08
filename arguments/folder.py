"""Your own ImageFolder data (--data_dir holding train/ and val/ class folders, resized to --size): no paper
numbers; --reproduce: the low-resolution recipe, a reasonable start."""
from arguments.paper import LOW_RESOLUTION as REPRODUCE  # noqa: F401
