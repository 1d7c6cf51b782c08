"""Hand-computed checks of the DSA ops, DiffAug's draw modes, normalisation and CutMix (CPU)."""
import math

import pytest
import torch
import torch.nn.functional as F

from data import augment
from data.augment import (DiffAug, brightness, contrast, crop, cutmix, cutmix_loss, cutout, flip, normalize,
                          rand_bbox, rotate, saturation, scale)
from utils import UserError, seed_everything


def grid4():
    """1 x 1 x 4 x 4 image with x[r, c] = 4r + c."""
    return torch.arange(16.0).view(1, 1, 4, 4)


def t(*values):
    """Shorthand for a float parameter tensor."""
    return torch.tensor(values, dtype=torch.float32)


# ---------------------------------------------------------------------------------------------
# Pure ops
# ---------------------------------------------------------------------------------------------

def test_flip_mirrors_width_only_where_masked():
    x = torch.cat([grid4(), grid4() + 100])
    out = flip(x, torch.tensor([True, False]))
    assert torch.equal(out[0, 0, 0], torch.tensor([3.0, 2.0, 1.0, 0.0]))
    assert torch.equal(out[0, 0, :, 0], torch.tensor([3.0, 7.0, 11.0, 15.0]))
    assert torch.equal(out[1], x[1])


def test_brightness_shift():
    x = torch.cat([grid4(), grid4()])
    out = brightness(x, t(0.75, 0.0))
    assert torch.allclose(out[0], x[0] + 0.25)
    assert torch.allclose(out[1], x[1] - 0.5)


def test_saturation_three_channel_pixel_and_one_channel_identity():
    x = t(0.0, 0.3, 0.9).view(1, 3, 1, 1)  # channel mean 0.4
    out = saturation(x, t(0.25))  # factor 2 * 0.25 = 0.5
    assert torch.allclose(out.flatten(), t(0.2, 0.35, 0.65))
    g = torch.rand(2, 1, 5, 5)
    assert torch.allclose(saturation(g, t(0.1, 0.9)), g)


def test_contrast_uses_per_sample_mean():
    x = torch.cat([t(0, 1, 2, 3).view(1, 1, 2, 2), t(10, 10, 12, 12).view(1, 1, 2, 2)])
    out = contrast(x, t(0.0, 1.0))  # factors 0.5 and 1.5, means 1.5 and 11
    assert torch.allclose(out[0].flatten(), t(0.75, 1.25, 1.75, 2.25))
    assert torch.allclose(out[1].flatten(), t(9.5, 9.5, 12.5, 12.5))


def test_crop_shift_with_zero_fill():
    out = crop(grid4(), torch.tensor([1]), torch.tensor([-1]))
    expected = torch.tensor([[0.0, 4, 5, 6],
                             [0.0, 8, 9, 10],
                             [0.0, 12, 13, 14],
                             [0.0, 0, 0, 0]])
    assert torch.equal(out[0, 0], expected)


def test_crop_per_sample_and_beyond_one_pixel():
    x = torch.cat([grid4(), grid4()])
    out = crop(x, torch.tensor([3, 0]), torch.tensor([0, 0]))
    expected = torch.zeros(4, 4)
    expected[0] = torch.tensor([12.0, 13, 14, 15])
    assert torch.equal(out[0, 0], expected)  # shifts larger than the 1-pixel pad still read zeros
    assert torch.equal(out[1], x[1])


def test_scale_identity_and_hand_cases():
    x = torch.arange(8.0).view(1, 1, 2, 4)
    assert torch.allclose(scale(x, t(1.0), t(1.0)), x, atol=1e-6)
    # sx = 2 (zoom out): output columns sample input pixel coordinates -1.5, 0.5, 2.5, 4.5 (align_corners=False).
    zoom_out = torch.tensor([[0.0, 0.5, 2.5, 0.0], [0.0, 4.5, 6.5, 0.0]])
    assert torch.allclose(scale(x, t(2.0), t(1.0))[0, 0], zoom_out, atol=1e-6)
    # sx = 0.5 (zoom in): columns sample 0.75, 1.25, 1.75, 2.25 on a linear ramp.
    zoom_in = torch.tensor([[0.75, 1.25, 1.75, 2.25], [4.75, 5.25, 5.75, 6.25]])
    assert torch.allclose(scale(x, t(0.5), t(1.0))[0, 0], zoom_in, atol=1e-6)
    # sy = 2 on a 4-row column image: rows sample -1.5, 0.5, 2.5, 4.5.
    col = torch.arange(4.0).view(1, 1, 4, 1)
    assert torch.allclose(scale(col, t(1.0), t(2.0)).flatten(), t(0.0, 0.5, 2.5, 0.0), atol=1e-6)


def test_rotate_zero_is_identity_and_quarter_turn_matches_rot90():
    x = torch.rand(2, 3, 5, 5)
    assert torch.allclose(rotate(x, t(0.0, 0.0)), x, atol=1e-6)
    out = rotate(grid4(), t(math.pi / 2))
    # theta = [[0,-1],[1,0]] samples input (col, row) = (-row_out, col_out): out[h, w] = x[w, W-1-h],
    # i.e. torch.rot90(k=1, dims=(2, 3)) (first row of the output is the input's last column).
    assert torch.allclose(out, torch.rot90(grid4(), 1, (2, 3)), atol=1e-5)
    assert torch.allclose(out[0, 0, 0], t(3, 7, 11, 15), atol=1e-5)
    assert not torch.allclose(out, torch.rot90(grid4(), -1, (2, 3)), atol=1e-2)


def cutout_by_scatter(x, ox, oy, ch, cw):
    """Literal form of section 4.4: zero the clamped window indices with a scatter."""
    n, _, h, w = x.shape
    mask = torch.ones(n, h, w)
    for k in range(n):
        rows = (torch.arange(ch) + int(ox[k]) - ch // 2).clamp(0, h - 1)
        cols = (torch.arange(cw) + int(oy[k]) - cw // 2).clamp(0, w - 1)
        mask[k, rows.view(-1, 1), cols.view(1, -1)] = 0
    return x * mask.unsqueeze(1)


def test_cutout_window_and_corner_clamping():
    ones = torch.ones(3, 2, 4, 4)
    out = cutout(ones, torch.tensor([0, 0, 2]), torch.tensor([0, 4, 1]), 2, 3)
    # sample 0: rows -1..0 -> {0}, cols -1..1 -> {0, 1}
    expected0 = torch.ones(4, 4)
    expected0[0, 0:2] = 0
    # sample 1: rows {0}, cols 3..5 -> {3}
    expected1 = torch.ones(4, 4)
    expected1[0, 3] = 0
    # sample 2: rows 1..2, cols 0..2
    expected2 = torch.ones(4, 4)
    expected2[1:3, 0:3] = 0
    for k, e in enumerate([expected0, expected1, expected2]):
        assert torch.equal(out[k, 0], e) and torch.equal(out[k, 1], e)


def test_cutout_matches_clamped_scatter_including_far_outside():
    torch.manual_seed(0)
    x = torch.rand(64, 3, 7, 6)
    ox = torch.randint(-6, 14, (64,))
    oy = torch.randint(-6, 13, (64,))
    for ch, cw in [(4, 3), (1, 1), (7, 6)]:
        assert torch.equal(cutout(x, ox, oy, ch, cw), cutout_by_scatter(x, ox, oy, ch, cw))


def test_normalize_lists_tensors_and_gradient():
    x = torch.ones(2, 3, 2, 2, requires_grad=True)
    out = normalize(x, [0.5, 0.25, 0.0], [0.5, 0.25, 2.0])
    assert torch.allclose(out[:, 0], torch.full((2, 2, 2), 1.0))
    assert torch.allclose(out[:, 1], torch.full((2, 2, 2), 3.0))
    assert torch.allclose(out[:, 2], torch.full((2, 2, 2), 0.5))
    assert torch.allclose(normalize(x, torch.tensor([0.5, 0.25, 0.0]), (0.5, 0.25, 2.0)), out)
    out.sum().backward()
    assert torch.allclose(x.grad[0, :, 0, 0], t(2.0, 4.0, 0.5))


# ---------------------------------------------------------------------------------------------
# DiffAug
# ---------------------------------------------------------------------------------------------

FULL = "flip_color_crop_scale_rotate_cutout"


def test_parsing_flags_ops_and_identity():
    a = DiffAug("Color_Crop_Cutout")
    assert (a.flip, a.color, a.cutout, a.ops) == (False, True, True, ["crop"])
    b = DiffAug("color_crop_flip_scale_rotate")
    assert (b.flip, b.color, b.cutout, b.ops) == (True, True, False, ["crop", "scale", "rotate"])
    x = torch.rand(3, 3, 8, 8)
    for s in ["", "none", "NONE", "None"]:
        assert torch.equal(DiffAug(s)(x), x)


def test_unknown_token_raises_user_error_naming_valid_tokens():
    with pytest.raises(UserError, match="crop.*scale.*rotate"):
        DiffAug("color_blur")


def test_siamese_mode_identical_halves():
    torch.manual_seed(1)
    a = torch.rand(4, 3, 16, 16)
    for _ in range(10):
        out = DiffAug(FULL, batch=True)(torch.cat([a, a]))
        assert torch.equal(out[:4], out[4:])
        assert not torch.allclose(out, torch.cat([a, a]))


def test_per_sample_mode_differs():
    torch.manual_seed(2)
    a = torch.rand(4, 3, 16, 16)
    out = DiffAug(FULL, batch=False)(torch.cat([a, a]))
    assert not torch.allclose(out[:4], out[4:])
    img = torch.rand(1, 3, 16, 16).expand(8, 3, 16, 16)
    out = DiffAug("color", batch=False)(img)
    assert len({tuple(o.flatten()[:5].tolist()) for o in out}) == 8


def test_groups_mode_shares_within_group_and_differs_across():
    torch.manual_seed(3)
    img = torch.rand(1, 3, 16, 16).expand(7, 3, 16, 16).contiguous()
    groups = torch.tensor([4, 1, 4, 9, 1, 9, 4])  # ids need not be contiguous
    for strategy in ["color_crop_cutout", FULL, "color_scale", "color_rotate"]:
        for batch in (False, True):  # groups take precedence over the batch flag
            out = DiffAug(strategy, batch=batch)(img, groups=groups)
            for gid in (1, 4, 9):
                members = out[groups == gid]
                assert torch.equal(members, members[:1].expand_as(members))
            assert not torch.allclose(out[0], out[1]) and not torch.allclose(out[0], out[3])
            assert not torch.allclose(out[1], out[3])


def test_same_seed_same_output():
    x = torch.rand(6, 3, 16, 16)
    groups = torch.tensor([0, 0, 1, 1, 2, 2])
    for batch in (False, True):
        for g in (None, groups):
            outs = []
            for _ in range(2):
                seed_everything(123)  # torch draws the parameters, Python's random the op
                outs.append(torch.stack([DiffAug(FULL, batch=batch)(x, groups=g) for _ in range(5)]))
            assert torch.equal(outs[0], outs[1])


def test_one_op_per_call_applied_to_whole_batch(monkeypatch):
    calls = []
    for name in ["crop", "scale", "rotate"]:
        real = getattr(augment, name)

        def spy(x, *params, _real=real, _name=name):
            calls.append((_name, x.shape[0]))
            return _real(x, *params)

        monkeypatch.setattr(augment, name, spy)
    torch.manual_seed(4)
    aug = DiffAug("color_crop_flip_scale_rotate")
    for _ in range(300):
        aug.reference(torch.rand(5, 3, 8, 8))  # the per-op path; the fused call matches it (test_augment_fused)
    assert len(calls) == 300 and all(n == 5 for _, n in calls)
    counts = {name: sum(c == name for c, _ in calls) for name in ["crop", "scale", "rotate"]}
    assert all(60 < v < 140 for v in counts.values()), counts


def test_gradients_flow_to_x():
    torch.manual_seed(5)
    for strategy in ["color_crop_cutout", "flip_scale", "rotate", "translate", FULL]:
        for batch in (False, True):
            x = torch.rand(4, 3, 8, 8, requires_grad=True)
            w = torch.rand(4, 3, 8, 8)
            (DiffAug(strategy, batch=batch)(x) * w).sum().backward()
            assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_output_contiguous_float32():
    x = torch.rand(3, 3, 8, 8).permute(0, 1, 3, 2)
    out = DiffAug("flip_color", batch=False)(x)
    assert out.is_contiguous() and out.dtype == torch.float32


def test_flip_probability_half():
    torch.manual_seed(12)
    x = grid4().expand(4000, 1, 4, 4)
    out = DiffAug("flip")(x)
    flipped = (out == x.flip(3)).flatten(1).all(1)
    assert torch.equal(flipped | (out == x).flatten(1).all(1), torch.ones(4000, dtype=torch.bool))
    assert 0.45 < flipped.float().mean() < 0.55


def test_brightness_range():
    torch.manual_seed(6)
    x = torch.full((4000, 1, 2, 2), 0.3)  # 1 channel, constant: saturation and contrast are identities
    shift = DiffAug("color")(x)[:, 0, 0, 0] - 0.3
    assert shift.min() >= -0.5 - 1e-6 and shift.max() < 0.5
    assert shift.min() < -0.49 and shift.max() > 0.49


def test_contrast_and_saturation_factor_ranges(monkeypatch):
    seen = {}
    for name in ["saturation", "contrast"]:
        def spy(x, r, _name=name, _real=getattr(augment, name)):
            seen[_name] = r.clone()
            return _real(x, r)
        monkeypatch.setattr(augment, name, spy)
    torch.manual_seed(7)
    DiffAug("color").reference(torch.rand(4000, 3, 2, 2))  # the per-op path, which the fused call matches
    for r in seen.values():  # factors 2r in [0, 2) and r + 0.5 in [0.5, 1.5)
        assert r.min() >= 0 and r.max() < 1 and r.min() < 0.01 and r.max() > 0.99


def test_crop_shift_range():
    torch.manual_seed(8)
    x = torch.zeros(3000, 1, 16, 16)
    x[:, :, 8, 8] = 1.0  # sx = int(16 * 0.125 + 0.5) = 2
    out = DiffAug("crop")(x)[:, 0]
    flat = out.flatten(1).argmax(1)
    i, j = flat // 16, flat % 16
    assert torch.equal(out.flatten(1).sum(1), torch.ones(3000))  # one pixel, never lost
    shifts = {(8 - a, 8 - b) for a, b in zip(i.tolist(), j.tolist())}  # out[i,j] = x[i+tx, j+ty]
    assert shifts == {(a, b) for a in range(-2, 3) for b in range(-2, 3)}


def test_translate_shifts_width_only():
    torch.manual_seed(9)
    x = torch.zeros(500, 1, 16, 16)
    x[:, :, 8, 8] = 1.0
    out = DiffAug("translate")(x)[:, 0]
    assert torch.equal(out[:, 8].sum(1), torch.ones(500))
    assert {int(j) for j in out[:, 8].argmax(1)} == {6, 7, 8, 9, 10}


def test_scale_and_rotate_parameter_ranges(monkeypatch):
    seen = {}
    monkeypatch.setattr(augment, "scale", lambda x, sx, sy: seen.setdefault("scale", (sx, sy)) and x)
    monkeypatch.setattr(augment, "rotate", lambda x, th: seen.setdefault("rotate", th) is not None and x)
    torch.manual_seed(10)
    x = torch.rand(5000, 1, 2, 2)
    DiffAug("scale").reference(x)  # the per-op path, which the fused call matches
    DiffAug("rotate").reference(x)
    lo, hi = 1 / 1.2, 1.2
    for s in seen["scale"]:
        assert s.min() >= lo and s.max() <= hi and s.min() < lo + 0.01 and s.max() > hi - 0.01
    limit = math.radians(15)
    th = seen["rotate"]
    assert th.min() >= -limit - 1e-6 and th.max() <= limit and th.min() < -0.99 * limit and th.max() > 0.99 * limit


def test_cutout_draw_range():
    torch.manual_seed(11)
    x = torch.ones(4000, 1, 8, 8)  # ch = cw = 4 (even): centres 0..8 inclusive
    out = DiffAug("cutout")(x)[:, 0]
    zero_rows = (out == 0).any(2).sum(1)
    zero_cols = (out == 0).any(1).sum(1)
    # rows ox-2 .. ox+1 clamped: 2 rows at ox = 0 and ox = 8, 3 at 1 and 7, else 4
    assert set(zero_rows.tolist()) == {2, 3, 4} and set(zero_cols.tolist()) == {2, 3, 4}
    assert ((out == 0).sum((1, 2)) == zero_rows * zero_cols).all()  # a rectangle
    bottom_only = (out[:, 7] == 0).any(1) & ~(out[:, 5] == 0).any(1)  # only ox = 8 zeroes rows 6..7 alone
    assert bottom_only.any()


# ---------------------------------------------------------------------------------------------
# CutMix
# ---------------------------------------------------------------------------------------------

def test_rand_bbox_hand_cases():
    assert rand_bbox(8, 8, 1.0, 3, 5) == (3, 5, 3, 5)  # lam = 1: empty box
    assert rand_bbox(8, 8, 0.0, 4, 4) == (0, 0, 8, 8)  # lam = 0: whole image
    assert rand_bbox(8, 8, 0.0, 7, 1) == (3, 0, 8, 5)  # clipped to the image
    assert rand_bbox(8, 8, 0.75, 4, 4) == (2, 2, 6, 6)  # cut = 0.5: a centred 4 x 4 box
    assert rand_bbox(8, 4, 0.0, 4, 2) == (0, 0, 8, 4)  # H (dim 2) = 8, W (dim 3) = 4
    assert rand_bbox(8, 4, 0.75, 0, 3) == (0, 2, 2, 4)  # cw = 4 along dim 2, ch = 2 along dim 3


def test_cutmix_pastes_from_perm_and_ratio_is_area_fraction():
    n, h, w = 6, 8, 10
    y = torch.arange(n)
    checked = 0
    for seed in range(20):
        torch.manual_seed(seed)
        x = torch.rand(n, 3, h, w)
        x_copy = x.clone()
        mixed, y_b, ratio = cutmix(x, y, beta=1.0)
        assert torch.equal(x, x_copy)  # the caller's batch is untouched
        perm = y_b  # y = arange, so y_b is the permutation itself
        assert sorted(perm.tolist()) == list(range(n))
        changed = (mixed != x).any(1).any(0)  # pixels pasted from another image
        if not changed.any():
            assert ratio == pytest.approx(1.0) or bool((perm == y).all())
            continue
        rows, cols = changed.any(1).nonzero().flatten(), changed.any(0).nonzero().flatten()
        r1, r2, c1, c2 = int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1
        box = torch.zeros(h, w, dtype=torch.bool)
        box[r1:r2, c1:c2] = True
        assert torch.equal(changed, box)  # a rectangle
        expected = torch.where(box, x[perm], x)
        assert torch.equal(mixed, expected)
        assert ratio == pytest.approx(1 - (r2 - r1) * (c2 - c1) / (h * w))
        checked += 1
    assert checked >= 10


def test_cutmix_seeded_and_differentiable():
    x = torch.rand(4, 3, 8, 8, requires_grad=True)
    y = torch.tensor([0, 1, 2, 3])
    torch.manual_seed(0)
    a = cutmix(x, y)
    torch.manual_seed(0)
    b = cutmix(x, y)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[2] == b[2]
    a[0].sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))  # perm is a bijection: every input pixel is used exactly once


def test_cutmix_loss_hand_mix():
    logits = torch.tensor([[0.0, math.log(3.0)]])  # softmax = (1/4, 3/4)
    y, y_b = torch.tensor([0]), torch.tensor([1])
    loss = cutmix_loss(logits, y, y_b, 0.3)
    assert loss.item() == pytest.approx(0.3 * math.log(4.0) + 0.7 * math.log(4.0 / 3.0), rel=1e-6)
    assert cutmix_loss(logits, y, y_b, 1.0).item() == pytest.approx(F.cross_entropy(logits, y).item())
