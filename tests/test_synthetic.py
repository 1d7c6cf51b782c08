"""Multi-formation decoding and mix initialisation against hand-computed small cases."""
import pytest
import torch

from data.set_files import load_set
from data.synthetic import SyntheticSet, decode, decode_bound, decode_multi, decode_zoom, tile_mix
from utils import UserError

# bilinear x2 upsampling (align_corners=False) samples source rows at -0.25, 0.25, 0.75, 1.25 (clamped)
W = torch.tensor([0.0, 0.25, 0.75, 1.0])


def up2(a, b, c, d):
    """Hand formula for a 2x2 block [[a, b], [c, d]] upsampled to 4x4."""
    top = a + (b - a) * W
    bottom = c + (d - c) * W
    return top[None, :] + (bottom - top)[None, :] * W[:, None]


def test_decode_zoom_factor2_crop_major_order_and_values():
    img = torch.arange(16.0).view(1, 1, 4, 4)
    out = decode_zoom(img, 2)
    assert out.shape == (4, 1, 4, 4)
    expected = [up2(0, 1, 4, 5), up2(2, 3, 6, 7), up2(8, 9, 12, 13), up2(10, 11, 14, 15)]
    for k in range(4):
        torch.testing.assert_close(out[k, 0], expected[k])


def test_decode_zoom_orders_all_images_crop_by_crop():
    imgs = torch.stack([torch.zeros(1, 4, 4), torch.ones(1, 4, 4)])
    out = decode_zoom(imgs, 2)
    # crop (0,0) of image 0, crop (0,0) of image 1, crop (0,1) of image 0, ...
    assert [float(o.mean()) for o in out] == [0, 1, 0, 1, 0, 1, 0, 1]


def test_decode_zoom_pads_sizes_not_divisible_with_half():
    img = torch.arange(9.0).view(1, 1, 3, 3)
    out = decode_zoom(img, 2)
    assert out.shape == (4, 1, 3, 3)
    # crop (1,1) is [[8, .5], [.5, .5]]; its top-left output pixel samples source (-1/6 -> clamped 0)
    corner = decode_zoom(img, 2)[3, 0, 0, 0]
    assert corner == pytest.approx(8.0)
    # crop (0,0) is [[0,1],[3,4]] upsampled to 3x3: centre pixel samples source (0.5, 0.5) -> mean = 2
    assert out[0, 0, 1, 1] == pytest.approx(2.0)


def test_decode_factor1_is_identity_and_multi_concatenates():
    img = torch.rand(3, 2, 4, 4)
    assert decode(img, 1, "single") is img
    multi = decode_multi(img, 2)
    assert multi.shape == (3 + 12, 2, 4, 4)
    torch.testing.assert_close(multi[:3], img)
    torch.testing.assert_close(multi[3:], decode_zoom(img, 2))


def test_decode_bound_hand_case():
    img = torch.rand(3, 1, 4, 4)
    # bound 6: spare 3 < 4, so no image fits at factor 2; all three stay whole
    torch.testing.assert_close(decode_bound(img, 2, 6), img)
    # bound 8: spare 5 -> one image at factor 2 (4 outputs), then two whole: 6 outputs
    out = decode_bound(img, 2, 8)
    assert out.shape[0] == 6
    torch.testing.assert_close(out[:4], decode_zoom(img[:1], 2))
    torch.testing.assert_close(out[4:], img[1:])


def test_tile_mix_places_groups_row_major():
    ipc = 1
    images = torch.stack([torch.full((1, 4, 4), v) for v in (1.0, 2.0, 3.0, 4.0)])
    out = tile_mix(images, 2, ipc)
    expected = torch.tensor([[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4], [3, 3, 4, 4]], dtype=torch.float)
    torch.testing.assert_close(out[0, 0], expected)


def test_tile_mix_odd_size_gives_larger_first_tiles():
    images = torch.stack([torch.full((1, 5, 5), v) for v in (1.0, 2.0, 3.0, 4.0)])
    out = tile_mix(images, 2, 1)[0, 0]
    assert (out[:3, :3] == 1).all() and (out[:3, 3:] == 2).all()
    assert (out[3:, :3] == 3).all() and (out[3:, 3:] == 4).all()


def test_tile_mix_nearest_downsampling_keeps_every_other_pixel():
    img = torch.arange(16.0).view(1, 1, 4, 4).repeat(4, 1, 1, 1)
    out = tile_mix(img, 2, 1)[0, 0]
    torch.testing.assert_close(out[:2, :2], torch.tensor([[0.0, 2.0], [8.0, 10.0]]))


class _FirstSampler:
    """Class c's images are constant c + k/10 for k = 0, 1, ..."""

    def first(self, c, n):
        return torch.stack([torch.full((1, 4, 4), c + k / 10) for k in range(n)])


def test_init_random_and_mix_use_first_images_per_class():
    s = SyntheticSet(2, 2, 1, 4, factor=1)
    s.init("random", _FirstSampler())
    assert [round(float(v), 2) for v in s.data.detach().mean((1, 2, 3))] == [0.0, 0.1, 1.0, 1.1]
    s = SyntheticSet(2, 2, 1, 4, factor=2)
    s.init("mix", _FirstSampler())
    # storage image m of class c: tiles hold images m, n+m, 2n+m, 3n+m (n = ipc = 2)
    torch.testing.assert_close(s.data[3, 0, 0, 0], torch.tensor(1.1))
    torch.testing.assert_close(s.data[3, 0, 0, 3], torch.tensor(1.3))
    torch.testing.assert_close(s.data[3, 0, 3, 0], torch.tensor(1.5))
    torch.testing.assert_close(s.data[3, 0, 3, 3], torch.tensor(1.7))


def test_sample_subsamples_per_class_and_keeps_class_rows():
    s = SyntheticSet(3, 4, 1, 4, factor=2)
    with torch.no_grad():
        s.data.copy_(torch.arange(3.0).repeat_interleave(4)[:, None, None, None].expand(12, 1, 4, 4))
    per_class = s.decoded_per_class(5)
    assert per_class.shape == (3, 5, 1, 4, 4)
    for c in range(3):
        assert (per_class[c] == c).all()
    assert s.sample(1, 0).shape == (16, 1, 4, 4) and (s.sample(1, 0) == 1).all()
    images, labels = s.decoded()
    assert images.shape == (48, 1, 4, 4) and labels.tolist() == [0] * 16 + [1] * 16 + [2] * 16
    assert not images.requires_grad


def test_sample_is_differentiable_to_class_rows_only():
    s = SyntheticSet(2, 2, 1, 4, factor=2)
    s.sample(1, 3).sum().backward()
    grad = s.data.grad.abs().sum((1, 2, 3))
    assert (grad[:2] == 0).all() and (grad[2:] >= 0).all() and grad[2:].sum() > 0


def test_save_and_load_round_trip(tmp_path):
    s = SyntheticSet(2, 3, 1, 4, factor=2)
    path = tmp_path / "data_0.pt"
    s.save(str(path))
    data, targets = torch.load(path, weights_only=True)
    assert data.dtype == torch.float32 and targets.tolist() == [0, 0, 0, 1, 1, 1]
    loaded, ipc = load_set(str(path), 2, 1, 4)
    assert ipc == 3 and torch.equal(loaded, s.data.detach())


@pytest.mark.parametrize("obj, message", [
    ({"a": 1}, "not a [data, targets] pair"),
    ([torch.zeros(4, 3, 4, 4), torch.zeros(4, dtype=torch.long)], "shape"),
    ([torch.zeros(3, 1, 4, 4), torch.zeros(3, dtype=torch.long)], "not ipc images"),
    ([torch.zeros(4, 1, 4, 4), torch.tensor([0, 1, 0, 1])], "class-major"),
    ([torch.full((4, 1, 4, 4), float("nan")), torch.tensor([0, 0, 1, 1])], "NaN"),
])
def test_load_set_refuses_bad_files(tmp_path, obj, message):
    path = tmp_path / "bad.pt"
    torch.save(obj, path)
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_set(str(path), 2, 1, 4)


def test_load_set_refuses_truncated_file(tmp_path):
    path = tmp_path / "cut.pt"
    torch.save([torch.zeros(4, 1, 4, 4), torch.tensor([0, 0, 1, 1])], path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(UserError, match="corrupt"):
        load_set(str(path), 2, 1, 4)
