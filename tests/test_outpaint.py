"""Unbounded scenes: tile bookkeeping, the seam metric, both canvas modes, and the edit / outpaint CLI."""

from __future__ import annotations

import json

import numpy as np
import PIL.Image
import pytest
import torch

from text2earth.cli.main import main as cli_main
from text2earth.io.images import read_png_text
from text2earth.pipelines.canvas import check_canvas, seam_visibility, tile_grid, tile_positions
from text2earth.pipelines.outpaint import multidiffusion_predictor, outpaint_joint, outpaint_tiles
from text2earth.pipelines.sampling import BranchConditions

CAPTION = "a patchwork of farmland fields"


# -- bookkeeping ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("length", "tile", "overlap"), [(256, 64, 16), (100, 32, 8), (64, 64, 16), (2048, 256, 64)])
def test_tile_positions_cover_the_canvas_with_the_overlap(length, tile, overlap):
    positions = tile_positions(length, tile, overlap)
    assert positions[0] == 0 and positions[-1] == length - tile
    covered = np.zeros(length, dtype=int)
    for p in positions:
        covered[p : p + tile] += 1
    assert (covered >= 1).all()
    gaps = np.diff(positions)
    assert (gaps > 0).all() and (tile - gaps >= overlap).all()  # neighbours overlap by at least `overlap`
    assert (gaps[:-1] == tile - overlap).all()  # regular stride, only the last tile shifted flush


def test_tile_grid_counts_and_errors():
    grid = tile_grid(2048, 1024, 256, 64)
    assert len(grid) == 11 * 5 and grid[0] == (0, 0) and grid[-1] == (2048 - 256, 1024 - 256)
    assert grid[1] == (192, 0)  # row by row
    with pytest.raises(ValueError, match="smaller than the tile"):
        tile_positions(64, 64, 64)
    with pytest.raises(ValueError, match="smaller than the tile"):
        tile_positions(32, 64, 8)
    with pytest.raises(ValueError, match="multiple of 8"):
        check_canvas(2048, 1020, 256, 64, 8)


def test_seam_metric_is_one_without_seams_and_large_with_them():
    rng = np.random.default_rng(0)
    tiles = tile_grid(96, 48, 48, 16)  # x edges at 32, 48, 80; y: single row of tiles
    smooth = rng.random((48, 96, 3))
    report = seam_visibility(smooth, tiles, 48)
    assert report.ratio == pytest.approx(1.0, abs=0.1)  # a seamless image: seams look like the inside
    steps = smooth.copy() * 0.1
    for x, _ in tiles[1:]:
        steps[:, x:] += 0.5  # a jump at every tile's left edge
    assert seam_visibility(steps, tiles, 48).ratio > 5
    # a jump somewhere else is not a seam
    elsewhere = smooth * 0.1
    elsewhere[:, 40:] += 0.5
    assert seam_visibility(elsewhere, tiles, 48).ratio < 1.0
    with pytest.raises(ValueError, match="no tile edges"):
        seam_visibility(smooth[:, :48], [(0, 0)], 48)


def test_multidiffusion_predictor_averages_overlapping_windows():
    calls = []

    def base(x, t, cond):  # a real function of the window: its mean, so averaging is visible
        calls.append(x.shape[-1])
        return x.mean(dim=(-1, -2), keepdim=True).expand_as(x)

    x = torch.arange(2 * 1 * 4 * 10, dtype=torch.float32).reshape(2, 1, 4, 10)
    cond = BranchConditions(torch.zeros(2, 1, 1), torch.zeros(2), 1)
    out = multidiffusion_predictor(base, [(0, 0), (3, 0), (6, 0)], 4)(x, torch.tensor(1), cond)
    assert calls == [4, 4, 4]
    means = [x[..., a : a + 4].mean(dim=(-1, -2)) for a in (0, 3, 6)]
    torch.testing.assert_close(out[..., 0], means[0][:, :, None].expand(2, 1, 4))  # one window
    torch.testing.assert_close(out[..., 3], ((means[0] + means[1]) / 2)[:, :, None].expand(2, 1, 4))  # two
    torch.testing.assert_close(out[..., 9], means[2][:, :, None].expand(2, 1, 4))


# -- both modes on the tiny model ------------------------------------------------------------------
def test_outpaint_tiles_canvas_keeps_the_init_image(inpaint_pipe):
    init = PIL.Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8))
    canvas = outpaint_tiles(
        inpaint_pipe, CAPTION, width=80, height=48, tile=32, overlap=8, gsd_m=10, init=init, feather=4,
        num_inference_steps=2,
    )  # fmt: skip
    assert canvas.image.shape == (48, 80, 3) and canvas.image.dtype == np.uint8
    assert len(canvas.tiles) == 3 * 2
    # kept exactly, except the feather band where new pixels blend in
    np.testing.assert_array_equal(canvas.image[:28, :28], np.asarray(init)[:28, :28])
    assert canvas.image[:, 32:].std() > 0  # the rest was painted
    assert canvas.level == pytest.approx(np.log2(2**17 / 10)) and np.isfinite(canvas.seams.ratio)


def test_outpaint_joint_canvas(text2img_pipe, inpaint_pipe):
    canvas = outpaint_joint(
        text2img_pipe, CAPTION, width=64, height=32, tile=32, overlap=8, level=13,
        num_inference_steps=2,
    )  # fmt: skip
    assert canvas.image.shape == (32, 64, 3) and canvas.tiles == [(0, 0), (24, 0), (32, 0)]
    assert canvas.seams.ratio > 0
    with pytest.raises(ValueError, match="text-to-image model"):
        outpaint_joint(inpaint_pipe, CAPTION, width=64, height=32, tile=32, overlap=8, level=13)
    with pytest.raises(ValueError, match="one level"):
        outpaint_joint(text2img_pipe, CAPTION, width=64, height=32, tile=32, overlap=8)


# -- CLI --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def folders(tmp_path_factory, text2img_pipe, inpaint_pipe):
    root = tmp_path_factory.mktemp("models")
    text2img_pipe.save_pretrained(root / "t2i")
    inpaint_pipe.save_pretrained(root / "inpaint")
    return root


def test_edit_cli_writes_png_and_rejects_bad_input(folders, tmp_path, capsys):
    image = np.random.default_rng(1).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    PIL.Image.fromarray(image).save(tmp_path / "tile.png")
    mask = np.zeros((32, 32), np.uint8)
    mask[8:24, 8:24] = 255
    PIL.Image.fromarray(mask).save(tmp_path / "mask.png")
    args = [
        "edit",
        str(tmp_path / "tile.png"),
        str(tmp_path / "mask.png"),
        CAPTION,
        "--model",
        str(folders / "inpaint"),
    ]
    out = tmp_path / "after.png"
    assert cli_main([*args, "--gsd", "10", "--steps", "2", "--paste-back", "--out", str(out)]) == 0
    after = np.asarray(PIL.Image.open(out))
    np.testing.assert_array_equal(after[mask == 0], image[mask == 0])
    assert read_png_text(out)["gsd_m"] == "10"

    PIL.Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "black.png")
    PIL.Image.fromarray(mask[:16, :16]).save(tmp_path / "small.png")
    for bad_mask, message in [
        ("black.png", "all black"),
        ("small.png", "mask is 16x16 pixels but the image is 32x32"),
        ("tile.png", "single-channel"),
    ]:
        bad = [
            "edit",
            str(tmp_path / "tile.png"),
            str(tmp_path / bad_mask),
            CAPTION,
            "--model",
            str(folders / "inpaint"),
        ]
        assert cli_main([*bad, "--out", str(tmp_path / "x.png")]) == 2
        assert message in capsys.readouterr().err
    wrong_model = [*args[:-1], str(folders / "t2i"), "--out", str(tmp_path / "x.png")]
    assert cli_main(wrong_model) == 2
    assert "needs an inpainting model" in capsys.readouterr().err


def test_outpaint_cli_both_modes(folders, tmp_path, capsys):
    common = ["--gsd", "10", "--width", "96", "--height", "32", "--window", "32", "--overlap", "8", "--steps", "2"]
    for mode, model in (("tiles", "inpaint"), ("joint", "t2i")):
        out = tmp_path / f"{mode}.png"
        argv = ["outpaint", CAPTION, "--model", str(folders / model), "--mode", mode, *common, "--out", str(out)]
        assert cli_main(argv) == 0
        printed = capsys.readouterr().out
        assert "seam visibility" in printed
        assert PIL.Image.open(out).size == (96, 32)
        report = json.loads(out.with_suffix(".json").read_text())
        assert report["mode"] == mode and report["tiles"] == 4 and report["gsd_m"] == pytest.approx(10)
        assert report["seam_ratio"] > 0
    bad = ["outpaint", CAPTION, "--model", str(folders / "t2i"), "--mode", "joint", *common]
    assert cli_main([*bad, "--init", str(out), "--out", str(tmp_path / "x.png")]) == 2
    assert "--mode tiles" in capsys.readouterr().err
    odd = ["outpaint", CAPTION, "--model", str(folders / "inpaint"), "--gsd", "10", "--width", "90", "--height", "32"]
    assert cli_main([*odd, "--window", "32", "--overlap", "8", "--out", str(tmp_path / "x.png")]) == 2
    assert "multiple of 4" in capsys.readouterr().err


def test_canvas_placed_on_a_tile_gets_a_cog(folders, tmp_path):
    rasterio = pytest.importorskip("rasterio")
    from text2earth.apps.edit import make_canvas, save_canvas
    from text2earth.core.webmercator import Location

    canvas = make_canvas(
        CAPTION, str(folders / "t2i"), 64, 32, 32, 8, mode="joint", level=12, steps=1, show_progress=False
    )
    assert "geo" not in save_canvas(canvas, tmp_path / "plain.png", model="t2i", seed=0)
    assert not (tmp_path / "plain.tif").exists()
    report = save_canvas(canvas, tmp_path / "c.png", model="t2i", seed=0, location=Location(tile=(12, 2100, 1400)))
    with rasterio.open(report["geo"]["cog"]) as tif:
        assert (tif.width, tif.height, tif.count) == (64, 32, 3) and tif.crs.to_epsg() == 3857
        assert tif.transform.a == pytest.approx(40075016.686 / (256 * 2**12))
    assert json.loads((tmp_path / "c.json").read_text())["geo"]["stac"] == str(tmp_path / "c.stac.json")


def test_edit_cli_on_a_tile_writes_a_cog(folders, tmp_path):
    rasterio = pytest.importorskip("rasterio")
    PIL.Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(tmp_path / "tile.png")
    PIL.Image.fromarray(np.full((32, 32), 255, np.uint8)).save(tmp_path / "mask.png")
    argv = [
        "edit",
        str(tmp_path / "tile.png"),
        str(tmp_path / "mask.png"),
        CAPTION,
        "--model",
        str(folders / "inpaint"),
    ]
    assert cli_main([*argv, "--steps", "1", "--tile", "12/1000/1500", "--out", str(tmp_path / "e.png")]) == 0
    with rasterio.open(tmp_path / "e.tif") as tif:
        assert tif.crs.to_epsg() == 3857 and tif.transform.a == pytest.approx(40075016.686 / (256 * 2**12))
    assert json.loads((tmp_path / "e.stac.json").read_text())["properties"]["text2earth:level"] == 12
