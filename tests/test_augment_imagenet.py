"""Hand-computed checks of the torchvision-style ImageNet training augmentation (`ImageNetAug`, CPU).

torchvision is not imported here (it costs over a second); resized_crop and rrc_fallback_box were checked
once against torchvision.transforms.functional.resized_crop and RandomResizedCrop.get_params by hand.
"""
import math

import pytest
import torch
import torch.nn.functional as F

from data.augment import (ImageNetAug, color_jitter, flip, grayscale, lighting, resized_crop, rrc_boxes,
                          rrc_fallback_box, sample_rrc_boxes)


# The official ColorJitter's three ops one at a time, each x.lerp(target, alpha) with a per-sample alpha (N,):
# the reference `color_jitter` (all three in one lerp per step) is checked against.
def jitter_brightness(x, alpha):
    """Official Brightness: x.lerp(0, alpha) = (1 - alpha) x."""
    return torch.lerp(x, torch.zeros_like(x), alpha.view(-1, 1, 1, 1))


def jitter_contrast(x, alpha):
    """Official Contrast: x.lerp(m, alpha), m = the mean of grayscale(x) over the whole image."""
    m = grayscale(x).mean(dim=(1, 2, 3), keepdim=True)
    return torch.lerp(x, m.expand_as(x), alpha.view(-1, 1, 1, 1))


def jitter_saturation(x, alpha):
    """Official Saturation: x.lerp(grayscale(x), alpha), the gray value broadcast to all three channels."""
    return torch.lerp(x, grayscale(x).expand_as(x), alpha.view(-1, 1, 1, 1))


def t(*values):
    """Shorthand for a float parameter tensor."""
    return torch.tensor(values, dtype=torch.float32)


def longs(*values):
    return torch.tensor(values, dtype=torch.long)


def pixel_image(*pixels):
    """1 x 3 x 1 x P image whose column p is the RGB triple pixels[p]."""
    return torch.tensor(pixels, dtype=torch.float32).t().reshape(1, 3, 1, len(pixels))


# ---------------------------------------------------------------------------------------------
# Colour ops
# ---------------------------------------------------------------------------------------------

def test_grayscale_weights():
    x = pixel_image((1.0, 0.0, 0.5))
    assert torch.allclose(grayscale(x), torch.tensor(0.299 + 0.114 * 0.5).view(1, 1, 1, 1))


def test_brightness_lerps_towards_black():
    x = torch.full((2, 3, 2, 2), 0.8)
    out = jitter_brightness(x, t(0.25, -0.25))
    assert torch.allclose(out[0], torch.full((3, 2, 2), 0.6))  # 0.8 + 0.25 * (0 - 0.8)
    assert torch.allclose(out[1], torch.full((3, 2, 2), 1.0))  # 0.8 - 0.25 * (0 - 0.8)


def test_saturation_lerps_towards_gray_pixel():
    x = pixel_image((1.0, 0.0, 0.5))
    out = jitter_saturation(x, t(0.5))
    g = 0.299 * 1.0 + 0.587 * 0.0 + 0.114 * 0.5  # 0.356
    expected = [1.0 + 0.5 * (g - 1.0), 0.0 + 0.5 * g, 0.5 + 0.5 * (g - 0.5)]  # 0.678, 0.178, 0.428
    assert torch.allclose(out.flatten(), t(*expected))
    assert torch.allclose(out.flatten(), t(0.678, 0.178, 0.428))


def test_contrast_lerps_towards_mean_gray_of_whole_image():
    x = pixel_image((1.0, 0.0, 0.0), (0.0, 1.0, 0.0))
    out = jitter_contrast(x, t(0.5))
    m = (0.299 + 0.587) / 2  # 0.443: the mean gray, one constant for every channel and pixel
    expected = torch.tensor([[1 - 0.5 * (1 - m), 0.5 * m], [0.5 * m, 1 - 0.5 * (1 - m)], [0.5 * m, 0.5 * m]])
    assert torch.allclose(out.view(3, 2), expected)
    assert torch.allclose(out.view(3, 2), torch.tensor([[0.7215, 0.2215], [0.2215, 0.7215], [0.2215, 0.2215]]))


def test_colour_ops_are_per_sample_and_leave_input_alone():
    x = torch.rand(3, 3, 4, 4)
    before = x.clone()
    alpha = t(0.3, 0.0, -0.2)
    for op in (jitter_brightness, jitter_contrast, jitter_saturation):
        out = op(x, alpha)
        assert torch.equal(out[1], x[1])  # alpha 0 is the identity
        for i in (0, 2):
            assert torch.allclose(out[i:i + 1], op(x[i:i + 1], alpha[i:i + 1]))
    assert torch.equal(x, before)


def test_color_jitter_indexes_alpha_by_op_code_not_by_step():
    x = torch.rand(2, 3, 3, 3)
    # Only brightness (op code 0) has a nonzero alpha; it runs at step 1 of sample 0 and step 2 of sample 1.
    out = color_jitter(x, longs([2, 0, 1], [1, 2, 0]), t([0.25, 0.0, 0.0], [-0.25, 0.0, 0.0]))
    assert torch.allclose(out[0], 0.75 * x[0])
    assert torch.allclose(out[1], 1.25 * x[1])


def test_color_jitter_equals_the_ops_in_the_given_order():
    x = torch.rand(2, 3, 5, 4)
    ops = (jitter_brightness, jitter_contrast, jitter_saturation)
    order = longs([1, 2, 0], [2, 0, 1])
    alpha = t([0.3, -0.2, 0.35], [-0.1, 0.25, -0.3])
    out = color_jitter(x, order, alpha)
    for i in range(2):
        y = x[i:i + 1]
        for code in order[i].tolist():
            y = ops[code](y, alpha[i, code:code + 1])
        assert torch.allclose(out[i:i + 1], y, atol=1e-6)


def test_lighting_hand_computed_pixel():
    x = torch.full((2, 3, 2, 2), 0.5)
    out = lighting(x, t([1.0, -2.0, 0.5], [0.0, 0.0, 0.0]))
    # rgb[i] = eigvec[i, 0] * 1 * 0.2175 + eigvec[i, 1] * (-2) * 0.0188 + eigvec[i, 2] * 0.5 * 0.0045
    r = -0.5675 * 0.2175 + 0.7192 * (-0.0376) + 0.4009 * 0.00225  # -0.149571145
    g = -0.5808 * 0.2175 + (-0.0045) * (-0.0376) + (-0.8140) * 0.00225  # -0.1279863
    b = -0.5836 * 0.2175 + (-0.6948) * (-0.0376) + 0.4203 * 0.00225  # -0.099862845
    assert abs(r + 0.149571145) < 1e-9 and abs(g + 0.1279863) < 1e-9 and abs(b + 0.099862845) < 1e-9
    expected = torch.tensor([0.5 + r, 0.5 + g, 0.5 + b]).view(3, 1, 1).expand(3, 2, 2)
    assert torch.allclose(out[0], expected, atol=1e-7)
    assert torch.equal(out[1], x[1])


# ---------------------------------------------------------------------------------------------
# Crop-and-resize, flip
# ---------------------------------------------------------------------------------------------

def test_resized_crop_whole_image_is_identity():
    x = torch.rand(2, 3, 5, 7)
    out = resized_crop(x, longs(0, 0), longs(0, 0), longs(5, 5), longs(7, 7))
    assert out.shape == x.shape
    assert torch.allclose(out, x, atol=1e-6)


def test_resized_crop_left_half_equals_bilinear_resize_of_the_crop():
    x = torch.arange(48.0).view(1, 3, 4, 4) / 47
    out = resized_crop(x, longs(0), longs(0), longs(4), longs(2))
    expected = F.interpolate(x[..., :, :2], size=(4, 4), mode="bilinear", align_corners=False)
    assert torch.allclose(out, expected, atol=1e-6)
    # Hand value: output column 0 reads crop column (0 + 0.5) * 2 / 4 - 0.5 = -0.25, clamped to 0 (not zero padding,
    # not the pixel left of the box); column 1 reads 0.25 between crop columns 0 and 1.
    assert torch.allclose(out[0, 0, 0], torch.tensor([0.0, 0.25, 0.75, 1.0]) / 47, atol=1e-6)


def test_resized_crop_interior_boxes_per_sample_and_output_size():
    x = torch.rand(2, 3, 6, 6)
    out = resized_crop(x, longs(1, 3), longs(2, 0), longs(3, 2), longs(2, 4), size=(5, 4))
    assert out.shape == (2, 3, 5, 4)
    for i, (r, c, h, w) in enumerate([(1, 2, 3, 2), (3, 0, 2, 4)]):
        crop = x[i:i + 1, :, r:r + h, c:c + w]
        expected = F.interpolate(crop, size=(5, 4), mode="bilinear", align_corners=False)
        assert torch.allclose(out[i:i + 1], expected, atol=1e-6)
    # A 1 x 1 box is that pixel everywhere.
    one = resized_crop(x[:1], longs(4), longs(5), longs(1), longs(1))
    assert torch.allclose(one, x[:1, :, 4:5, 5:6].expand(1, 3, 6, 6), atol=1e-6)


def test_flip_mask_flips_exactly_the_chosen_samples():
    x = torch.rand(4, 3, 2, 3)
    out = flip(x, torch.tensor([True, False, False, True]))
    assert torch.equal(out[0], x[0].flip(2)) and torch.equal(out[3], x[3].flip(2))
    assert torch.equal(out[1], x[1]) and torch.equal(out[2], x[2])
    assert not torch.equal(out[0], x[0])


# ---------------------------------------------------------------------------------------------
# Crop boxes
# ---------------------------------------------------------------------------------------------

def test_rrc_boxes_first_fitting_try_and_rounding():
    ratio = math.log(4 / 3)
    area = t([1.0, 0.64, 0.25], [0.5, 0.5, 0.5])
    log_ratio = t([ratio, 0.0, 0.0], [ratio, 0.0, 0.0])
    top, left, h, w = rrc_boxes(10, 10, area, log_ratio, t([0.5, 0.99], [0.0, 0.0]))
    # Sample 0: try 0 gives w = round(sqrt(100 * 4/3)) = 12 > 10 (no fit); try 1 gives 8 x 8 and wins over try 2.
    # top = floor(0.5 * (10 - 8 + 1)) = 1, left = floor(0.99 * 3) = 2.
    # Sample 1: area 50, ratio 4/3: w = round(8.165) = 8, h = round(6.124) = 6 at the top-left corner.
    assert top.tolist() == [1, 0] and left.tolist() == [2, 0]
    assert h.tolist() == [8, 6] and w.tolist() == [8, 8]
    assert top.dtype == torch.long


def test_rrc_boxes_fallback_when_no_try_fits():
    big = torch.full((1, 10), 1.0)
    wide = torch.full((1, 10), math.log(4 / 3))
    pos = t([0.7, 0.3])
    # Square image: the fallback is the whole image.
    assert [v.item() for v in rrc_boxes(10, 10, big, wide, pos)] == [0, 0, 10, 10]
    # H = 10, W = 40 (ratio 4 > 4/3): h = 10, w = round(10 * 4/3) = 13, centred: left = (40 - 13) // 2 = 13.
    assert [v.item() for v in rrc_boxes(10, 40, big * 5, wide, pos)] == [0, 13, 10, 13]
    # H = 40, W = 10 (ratio 1/4 < 3/4): w = 10, h = round(10 / (3/4)) = 13, top = (40 - 13) // 2 = 13.
    assert [v.item() for v in rrc_boxes(40, 10, big * 5, wide, pos)] == [13, 0, 13, 10]


def test_sampled_boxes_lie_inside_with_area_and_ratio_in_range():
    torch.manual_seed(0)
    # On 24 x 40 (ratio 5/3) no box of ratio <= 4/3 covers more than 24 x 32 = 0.8 of the image (+ rounding),
    # and a box of ratio 3/4 and at least half the area (h >= sqrt(480 / 0.75) > 24) never fits.
    for height, width, max_frac, min_ratio in [(32, 32, 0.9, 0.8), (24, 40, 0.78, 0.9)]:
        top, left, h, w = (v.double() for v in sample_rrc_boxes(20000, height, width))
        assert bool((top >= 0).all() and (left >= 0).all() and (h >= 1).all() and (w >= 1).all())
        assert bool((top + h <= height).all() and (left + w <= width).all())
        # Each side is within 0.5 of the unrounded side, so the unrounded area and ratio lie in these bounds.
        full = height * width
        assert bool(((h + 0.5) * (w + 0.5) >= 0.5 * full).all() and ((h - 0.5) * (w - 0.5) <= full).all())
        assert bool(((w + 0.5) / (h - 0.5) >= 3 / 4).all() and ((w - 0.5) / (h + 0.5) <= 4 / 3).all())
        frac = h * w / full
        assert frac.min() < 0.53 and frac.max() > max_frac  # the whole scale range is used
        assert top.min() == 0 and (top + h).max() == height and left.min() == 0 and (left + w).max() == width
        ar = w / h
        assert ar.min() < min_ratio and ar.max() > 1.25


def test_sampled_boxes_use_fallback_for_very_non_square_images():
    torch.manual_seed(0)
    top, left, h, w = sample_rrc_boxes(50, 4, 64)  # no box of ratio <= 4/3 covers half of a 4 x 64 image
    assert top.tolist() == [0] * 50 and left.tolist() == [29] * 50
    assert h.tolist() == [4] * 50 and w.tolist() == [5] * 50  # round(4 * 4/3) = 5, (64 - 5) // 2 = 29


# ---------------------------------------------------------------------------------------------
# ImageNetAug
# ---------------------------------------------------------------------------------------------

def test_imagenet_aug_reproducible_pure_and_shape_preserving():
    x = torch.rand(6, 3, 16, 16)
    before = x.clone()
    aug = ImageNetAug()
    torch.manual_seed(3)
    a = aug(x)
    torch.manual_seed(3)
    b = aug(x)
    assert torch.equal(a, b)
    assert torch.equal(x, before)
    assert a.shape == x.shape and a.dtype == x.dtype and a.device == x.device
    assert not torch.equal(aug(x), a)  # a fresh draw otherwise
    x64 = x.double()
    assert aug(x64).dtype == torch.float64


def test_imagenet_aug_draws_per_sample():
    x = torch.rand(1, 3, 16, 16).expand(8, 3, 16, 16)
    torch.manual_seed(0)
    out = ImageNetAug()(x)
    for i in range(8):
        for j in range(i + 1, 8):
            assert not torch.allclose(out[i], out[j])


def test_imagenet_aug_switched_off_is_identity_and_flip_only_flips():
    x = torch.rand(4, 3, 8, 8)
    off = ImageNetAug(rrc=False, flip_p=0.0, brightness=0.0, contrast=0.0, saturation=0.0, alphastd=0.0)
    assert torch.equal(off(x), x)
    flip_all = ImageNetAug(rrc=False, flip_p=1.0, brightness=0.0, contrast=0.0, saturation=0.0, alphastd=0.0)
    assert torch.equal(flip_all(x), x.flip(3))
    # The crop alone keeps every output pixel inside the input's value range (bilinear = convex combinations).
    crop_only = ImageNetAug(flip_p=0.0, brightness=0.0, contrast=0.0, saturation=0.0, alphastd=0.0)
    y = crop_only(x)
    assert y.min() >= x.min() - 1e-6 and y.max() <= x.max() + 1e-6
    assert not torch.allclose(y, x)


def test_imagenet_aug_brightness_and_lighting_ranges():
    torch.manual_seed(0)
    x = torch.full((4000, 3, 1, 1), 0.5)
    bright = ImageNetAug(rrc=False, flip_p=0.0, contrast=0.0, saturation=0.0, alphastd=0.0)(x)
    factor = bright[:, 0, 0, 0] / 0.5  # 1 - alpha with alpha ~ U(-0.4, 0.4)
    assert factor.min() >= 0.6 - 1e-6 and factor.max() <= 1.4 + 1e-6
    assert factor.min() < 0.62 and factor.max() > 1.38
    assert torch.equal(bright[:, 0], bright[:, 2])  # brightness scales all channels alike
    light = ImageNetAug(rrc=False, flip_p=0.0, brightness=0.0, contrast=0.0, saturation=0.0)(x)
    shift = (light - 0.5).view(-1, 3)
    # Solve shift = eigvec @ (alpha * eigval) for alpha; alpha ~ N(0, 0.1) per component.
    eigvec = torch.tensor([[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]])
    eigval = torch.tensor([0.2175, 0.0188, 0.0045])
    alpha = torch.linalg.solve(eigvec, shift.t()).t() / eigval
    assert torch.allclose(alpha.std(0), torch.full((3,), 0.1), rtol=0.1)
    assert alpha.mean(0).abs().max() < 0.01


def test_imagenet_aug_rejects_non_rgb():
    with pytest.raises(ValueError, match="3"):
        ImageNetAug()(torch.rand(2, 1, 8, 8))
