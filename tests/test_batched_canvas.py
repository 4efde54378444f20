"""Batched canvases: many windows per UNet call give the same canvas as one window at a time."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch

from text2earth.pipelines.canvas import tile_grid
from text2earth.pipelines.outpaint import multidiffusion_predictor, outpaint_joint, outpaint_tiles, tile_waves
from text2earth.pipelines.sampling import BranchConditions

CAPTION = "farmland with a winding river"


def _overlap(a: tuple[int, int], b: tuple[int, int], tile: int) -> bool:
    return abs(a[0] - b[0]) < tile and abs(a[1] - b[1]) < tile


@pytest.mark.parametrize("width,height,tile,overlap", [(128, 64, 32, 8), (96, 96, 32, 20), (64, 32, 32, 0)])
def test_tile_waves_respect_every_dependency(width, height, tile, overlap):
    tiles = tile_grid(width, height, tile, overlap)
    waves = tile_waves(tiles, tile)
    assert sorted(i for wave in waves for i in wave) == list(range(len(tiles)))
    wave_of = {i: w for w, wave in enumerate(waves) for i in wave}
    for i in range(len(tiles)):
        for j in range(i):  # an earlier tile it overlaps is painted in an earlier wave
            if _overlap(tiles[i], tiles[j], tile):
                assert wave_of[j] < wave_of[i]
    assert len(waves) < len(tiles) or overlap == 0  # batching has something to batch


def test_multidiffusion_predictor_batches_windows_with_their_conditions():
    sizes = []

    def base(x, t, cond):  # depends on the window and on its condition rows
        sizes.append(x.shape[0])
        return x * cond.class_labels[:, None, None, None] + cond.text_embeds.mean()

    x = torch.randn(4, 2, 4, 14, generator=torch.Generator().manual_seed(0))  # 2 branches x 2 images
    cond = BranchConditions(torch.randn(4, 3, 5), torch.tensor([0.0, 0.0, 15.0, 16.0]), 2)
    windows = [(0, 0), (4, 0), (8, 0), (10, 0)]
    one = multidiffusion_predictor(base, windows, 4)(x, torch.tensor(1), cond)
    assert sizes == [4] * 4
    sizes.clear()
    three = multidiffusion_predictor(base, windows, 4, windows_per_call=3)(x, torch.tensor(1), cond)
    assert sizes == [12, 4]
    torch.testing.assert_close(three, one)


def test_joint_canvas_is_the_same_with_batched_windows(text2img_pipe):
    kwargs = {"width": 96, "height": 64, "tile": 32, "overlap": 8, "level": 13, "num_inference_steps": 2}
    one = outpaint_joint(text2img_pipe, CAPTION, **kwargs)
    batched = outpaint_joint(text2img_pipe, CAPTION, windows_per_call=4, **kwargs)
    # batched convolutions may round differently in the last float bit: at most one grey level
    assert np.abs(one.image.astype(int) - batched.image.astype(int)).max() <= 1
    assert one.image.std() > 0


def test_tile_canvas_is_the_same_with_batched_windows(inpaint_pipe):
    init = PIL.Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8))
    kwargs = {"width": 128, "height": 56, "tile": 32, "overlap": 8, "gsd_m": 10, "init": init, "num_inference_steps": 2}
    one = outpaint_tiles(inpaint_pipe, CAPTION, **kwargs)
    calls = []
    original = inpaint_pipe.unet.forward

    def counting(sample, *args, **kw):
        calls.append(sample.shape[0])
        return original(sample, *args, **kw)

    inpaint_pipe.unet.forward = counting
    try:
        batched = outpaint_tiles(inpaint_pipe, CAPTION, windows_per_call=8, **kwargs)
    finally:
        del inpaint_pipe.unet.forward
    assert max(calls) > 2  # several tiles (x 2 guidance branches) went through one UNet call
    assert np.abs(one.image.astype(int) - batched.image.astype(int)).max() <= 1
    np.testing.assert_array_equal(batched.image[:24, :24], np.asarray(init)[:24, :24])  # feather 8
