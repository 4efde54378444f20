"""Image conversion, PNG text metadata, atomic writes, loading errors, figure grids, PSNR / SSIM."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch

from text2earth.core.image_metrics import psnr, ssim
from text2earth.io.images import (
    ImageReadError,
    image_to_tensor,
    labelled_grid,
    load_rgb,
    make_grid,
    mask_to_tensor,
    normalise_uint8,
    quantize_8bit,
    read_png_text,
    save_png,
    stack_uint8,
    to_pil,
    to_tensor,
    to_uint8,
    to_unit_float,
)
from text2earth.io.pngmeta import image_text


def rgb(h: int = 8, w: int = 8, value: tuple[int, int, int] = (10, 120, 240)) -> PIL.Image.Image:
    return PIL.Image.new("RGB", (w, h), value)


def test_to_uint8_ranges_and_layouts():
    x = np.array([[[0.0, 0.5, 1.0]]], dtype=np.float32)
    np.testing.assert_array_equal(to_uint8(x), [[[0, 128, 255]]])
    np.testing.assert_array_equal(to_uint8(x * 2 - 1, value_range=(-1, 1)), [[[0, 128, 255]]])
    np.testing.assert_array_equal(to_uint8(np.array([[-0.3, 1.7]])), [[0, 255]])  # clipped, not wrapped
    chw = torch.rand(3, 4, 5)
    out = to_uint8(chw)
    assert out.shape == (4, 5, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, (chw.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    assert to_uint8(torch.rand(2, 3, 4, 5)).shape == (2, 4, 5, 3)
    u8 = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    assert to_uint8(u8) is u8
    with pytest.raises(ValueError, match="value_range"):
        to_uint8(x, value_range=(1, 0))
    with pytest.raises(ValueError, match="dimensions"):
        to_uint8(np.zeros(3))


def test_tensor_converters_keep_the_numerics_of_the_copies_they_replaced():
    values = np.arange(256, dtype=np.uint8).reshape(16, 16)
    image = np.stack([values, values.T, 255 - values], axis=-1)  # every uint8 value, H x W x 3
    reference = torch.from_numpy(image).permute(2, 0, 1).float()
    # [-1, 1]: the data module's x / 127.5 - 1 and inpainting's x / 255 * 2 - 1 give the same bits.
    torch.testing.assert_close(to_tensor(image, (-1, 1)), reference.div(127.5).sub(1.0), rtol=0, atol=0)
    torch.testing.assert_close(to_tensor(image), reference / 255.0, rtol=0, atol=0)
    torch.testing.assert_close(
        normalise_uint8(torch.from_numpy(image)), torch.from_numpy(image).float() / 127.5 - 1, rtol=0, atol=0
    )
    torch.testing.assert_close(
        normalise_uint8(torch.from_numpy(image), (0, 1)), torch.from_numpy(image).float() / 255.0, rtol=0, atol=0
    )
    assert to_tensor(to_unit_float(image)).equal(to_tensor(image))  # float [0, 1] input passes through
    assert to_tensor(image).is_contiguous()
    np.testing.assert_array_equal(to_uint8(to_tensor(image)), image)  # and back
    x = torch.rand(2, 3, 5, 5) * 1.2 - 0.1
    assert quantize_8bit(x).equal((x.clamp(0, 1) * 255).round() / 255)
    pil = PIL.Image.fromarray(image)
    assert image_to_tensor(pil).shape == (1, 3, 16, 16) and image_to_tensor(pil).equal(to_tensor(image, (-1, 1))[None])


def test_mask_to_tensor_and_stack_uint8():
    grey = PIL.Image.fromarray(np.array([[0, 255], [128, 0]], dtype=np.uint8))
    np.testing.assert_array_equal(mask_to_tensor(grey)[0, 0].numpy(), np.asarray(grey, np.float32) / 255)
    assert mask_to_tensor(grey.convert("RGB")).equal(mask_to_tensor(grey))  # a grey PNG saved as RGB
    with pytest.raises(ValueError, match="mask must be single-channel"):
        mask_to_tensor(rgb())
    batch = stack_uint8([rgb(), rgb(value=(1, 2, 3))])
    assert batch.dtype == torch.uint8 and batch.shape == (2, 3, 8, 8) and batch[1, :, 0, 0].tolist() == [1, 2, 3]
    assert stack_uint8([rgb(), rgb(4, 6)], size=4).shape == (2, 3, 4, 4)
    with pytest.raises(ValueError, match="share a size"):
        stack_uint8([rgb(), rgb(4, 6)])


def test_image_text_keys():
    text = image_text("a harbour", 17.0, seed=3, lora=None, guidance=f"{4.0:g}")
    assert list(text) == ["prompt", "level", "gsd_m", "seed", "guidance"]  # None left out, order kept
    assert text == {"prompt": "a harbour", "level": "17", "gsd_m": "1", "seed": "3", "guidance": "4"}
    assert image_text("x", 0)["gsd_m"] == "unknown"


def test_psnr_and_ssim():
    gt = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    pred = (gt + 0.05 * torch.randn(gt.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    mse = (pred - gt).pow(2).mean(dim=(1, 2, 3))
    torch.testing.assert_close(psnr(pred, gt), -10 * torch.log10(mse))
    torch.testing.assert_close(psnr(pred, gt, per_image=False), -10 * torch.log10((pred - gt).pow(2).mean()))
    torch.testing.assert_close(psnr((pred * 2 - 1), (gt * 2 - 1), data_range=2.0), psnr(pred, gt))
    assert ssim(gt, gt).shape == (3,) and torch.allclose(ssim(gt, gt), torch.ones(3))
    assert (ssim(pred, gt) < 1).all()


def test_to_pil_modes():
    assert to_pil(np.zeros((4, 4, 1))).mode == "L"
    assert to_pil(torch.zeros(1, 3, 4, 4)).mode == "RGB"
    with pytest.raises(ValueError, match="channels"):
        to_pil(np.zeros((4, 4, 2)))
    with pytest.raises(ValueError, match="batch"):
        to_pil(np.zeros((2, 4, 4, 3)))


def test_png_text_round_trip(tmp_path):
    image = np.random.default_rng(0).random((16, 16, 3)).astype(np.float32)
    meta = {"prompt": "a harbour, été 2024 港口", "level": 17.0, "gsd_m": 1.0, "seed": 42, "skipped": None}
    path = save_png(image, tmp_path / "sub" / "img.png", text=meta)
    assert path.exists()
    assert read_png_text(path) == {"prompt": "a harbour, été 2024 港口", "level": "17.0", "gsd_m": "1.0", "seed": "42"}
    np.testing.assert_array_equal(np.asarray(load_rgb(path)), to_uint8(image))
    assert read_png_text(save_png(rgb(), tmp_path / "plain.png")) == {}


def test_save_png_is_atomic(tmp_path):
    target = tmp_path / "img.png"
    save_png(rgb(value=(1, 2, 3)), target, text={"v": "1"})
    save_png(rgb(value=(4, 5, 6)), target, text={"v": "2"})  # overwrite in place
    assert read_png_text(target) == {"v": "2"} and load_rgb(target).getpixel((0, 0)) == (4, 5, 6)
    with pytest.raises(ValueError):
        save_png(np.zeros((4, 4, 2)), target, text={"v": "3"})  # fails before anything is written
    assert read_png_text(target) == {"v": "2"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img.png"]  # no temporary files left behind


def test_load_rgb_errors_and_conversion(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_rgb(tmp_path / "missing.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(ImageReadError, match="cannot decode"):
        load_rgb(bad)
    truncated = tmp_path / "truncated.png"
    save_png(np.random.default_rng(1).random((64, 64, 3)), truncated)
    truncated.write_bytes(truncated.read_bytes()[:200])
    with pytest.raises(ImageReadError):
        load_rgb(truncated)
    gray = tmp_path / "gray.png"
    PIL.Image.new("L", (5, 3), 77).save(gray)
    loaded = load_rgb(gray)
    assert loaded.mode == "RGB" and loaded.size == (5, 3) and loaded.getpixel((0, 0)) == (77, 77, 77)


def test_make_grid_layout():
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (9, 9, 9), (200, 100, 50)]
    grid = make_grid([rgb(value=c) for c in colours], nrow=2, padding=2)
    assert grid.size == (2 * 8 + 3 * 2, 3 * 8 + 4 * 2)
    for i, colour in enumerate(colours):
        r, c = divmod(i, 2)
        assert grid.getpixel((2 + c * 10 + 4, 2 + r * 10 + 4)) == colour
    assert grid.getpixel((0, 0)) == (255, 255, 255)  # padding
    assert grid.getpixel((2 + 10 + 4, 2 + 20 + 4)) == (255, 255, 255)  # the empty last cell
    batch = make_grid(torch.zeros(3, 3, 8, 8), nrow=3, padding=0)
    assert batch.size == (24, 8) and batch.getpixel((23, 7)) == (0, 0, 0)
    with pytest.raises(ValueError, match="at least one"):
        make_grid([])


def test_labelled_grid():
    rows = [[rgb(value=(0, 0, 200))] * 3, [rgb(value=(0, 200, 0))] * 3]
    plain = labelled_grid(rows, padding=2)
    assert plain.size == (3 * 10 + 2, 2 * 10 + 2)
    labels = ["a long prompt about a harbour with boats and cranes", "forest"]
    figure = labelled_grid(rows, row_labels=labels, col_labels=["L0 (unknown)", "L12", "L17"], cell_size=32, padding=2)
    w, h = figure.size
    assert w > 3 * 34 and h > 2 * 34
    pixels = np.asarray(figure)
    left = w - 3 * 34 - 2
    top = h - 2 * 34 - 2
    # The text margins hold dark label pixels on white; the cells hold the (resized) images.
    assert (pixels[:, :left].min(axis=-1) < 100).any() and (pixels[:top, left:].min(axis=-1) < 100).any()
    assert pixels[0, 0].tolist() == [255, 255, 255]
    assert tuple(pixels[top + 2 + 16, left + 2 + 16]) == (0, 0, 200)
    assert tuple(pixels[top + 2 + 34 + 16, left + 2 + 2 * 34 + 16]) == (0, 200, 0)
    with pytest.raises(ValueError, match="row labels"):
        labelled_grid(rows, row_labels=["only one"])
    with pytest.raises(ValueError, match="column labels"):
        labelled_grid(rows, col_labels=["a", "b"])
