"""`-d patches`: an embedded real benchmark that needs no download, harder than digits.

Ten classes, one per colour image that scikit-image ships inside its package (skimage/data): eight photographs
(astronaut, the cat Chelsea, coffee, the Hubble deep field, an immunohistochemistry slide, a motorcycle, a retina, a
rocket) and two colour graphics (the colour wheel, the scikit-image logo on white). Each image is resized so that
its shorter side is SCALE patch sides, then cut into vertical stripes of STRIPE patch sides each: stripes
0, 1, 3, 4, 6, ... are the training region and every third stripe (2, 5, ...) the test region, so a test patch
shares no pixel with a training patch, while both regions span the whole image. Patches of `size` x `size` pixels
are drawn at seeded random positions that lie inside one stripe. The class is which image a patch comes from.
"""
import numpy as np
import torch
from PIL import Image

from utils import UserError

# (class name, skimage.data loader); the order is the label
IMAGES = (("astronaut", "astronaut"), ("cat", "chelsea"), ("coffee", "coffee"), ("galaxies", "hubble_deep_field"),
          ("tissue", "immunohistochemistry"), ("motorcycle", "stereo_motorcycle"), ("retina", "retina"),
          ("rocket", "rocket"), ("colorwheel", "colorwheel"), ("logo", "logo"))
CLASS_NAMES = tuple(name for name, _ in IMAGES)
SIZE = 16          # default patch side in pixels
SCALE = 8          # an image's shorter side, in patch sides, after resizing
STRIPE = 2         # stripe width in patch sides
TRAIN_PER_CLASS = 500
TEST_PER_CLASS = 200
SEED = 0


def source_image(loader):
    """One of scikit-image's bundled colour images as an RGB uint8 array (RGBA composited on white)."""
    try:
        from skimage import data
    except ImportError:
        raise UserError("-d patches cuts its images from scikit-image's bundled photographs; install it: "
                        "pip install scikit-image") from None
    image = getattr(data, loader)()
    image = image[0] if isinstance(image, tuple) else image  # stereo_motorcycle: (left, right, disparity)
    if image.shape[2] == 4:
        alpha = image[..., 3:4].astype(np.float32) / 255
        image = (image[..., :3] * alpha + 255 * (1 - alpha)).round().astype(np.uint8)
    return image


def resized(image, size):
    """The image resized (antialiased) so that its shorter side is SCALE * size pixels."""
    h, w = image.shape[:2]
    k = SCALE * size / min(h, w)
    return np.asarray(Image.fromarray(image).resize((round(w * k), round(h * k)), Image.BICUBIC))


def stripes(width, size, test):
    """[start, end) column ranges of the stripes of one region (test: every third stripe, else the others)."""
    step = STRIPE * size
    out = []
    for i, start in enumerate(range(0, width - step + 1, step)):
        if (i % 3 == 2) == test:
            out.append((start, start + step))
    return out


def cut(image, size, count, test, rng):
    """`count` patches (count, 3, size, size) uint8 at random positions inside the region's stripes."""
    h, w = image.shape[:2]
    regions = stripes(w, size, test)
    which = rng.integers(len(regions), size=count)
    patches = []
    for r in which:
        start, end = regions[r]
        x = rng.integers(start, end - size + 1)
        y = rng.integers(0, h - size + 1)
        patches.append(image[y:y + size, x:x + size])
    return torch.from_numpy(np.stack(patches)).permute(0, 3, 1, 2).contiguous()


def patch_splits(size=SIZE):
    """(train images, train labels, test images, test labels): class-major uint8 patches of every image."""
    rng = np.random.default_rng(SEED)
    train, test = [], []
    for _, loader in IMAGES:
        image = resized(source_image(loader), size)
        train.append(cut(image, size, TRAIN_PER_CLASS, False, rng))
        test.append(cut(image, size, TEST_PER_CLASS, True, rng))
    labels = torch.arange(len(IMAGES))
    return (torch.cat(train), labels.repeat_interleave(TRAIN_PER_CLASS), torch.cat(test),
            labels.repeat_interleave(TEST_PER_CLASS))
