"""Unbounded scenes: a canvas larger than the model's tile, at one resolution level everywhere.

Two ways, both on the one sampling loop:
- ``tiles``: grow the canvas tile by tile with the inpainting model. Each tile's mask is the part of
  the canvas that is still empty; the new pixels fill it and blend into what is already there over
  ``feather`` pixels of the known side (known pixels farther from the new area stay exact). An
  ``init`` image seeds the canvas (at the top-left corner, or at ``init_at``: the web app grows a scene
  westwards or northwards that way).
- ``joint`` (MultiDiffusion, Bar-Tal et al. 2023): the text-to-image model denoises the whole canvas
  at once; each step its prediction is computed on every overlapping tile window and averaged where
  windows overlap. That is just another ``predict`` callable for :func:`~text2earth.pipelines.sampling.denoise`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import PIL.Image
import torch

from text2earth.core.resolution import parse_prompt, resolve_level
from text2earth.io.images import to_uint8
from text2earth.models.inpainting import is_inpainting_unet
from text2earth.pipelines.canvas import SeamReport, check_canvas, seam_visibility, tile_grid
from text2earth.pipelines.inpaint import Text2EarthInpaintPipeline, feather_weights
from text2earth.pipelines.sampling import BranchConditions, Predictor, StepCallback, unet_predictor
from text2earth.pipelines.text2img import SamplingRequest, Text2EarthPipeline

MODES = ("tiles", "joint")


@dataclass
class Canvas:
    """The scene (H, W, 3 uint8), where its tiles are, and how visible their seams are."""

    image: np.ndarray
    caption: str
    tiles: list[tuple[int, int]]
    tile: int
    level: float
    mode: str

    @property
    def seams(self) -> SeamReport:
        return seam_visibility(self.image.astype(np.float32) / 255.0, self.tiles, self.tile)


def multidiffusion_predictor(
    base: Predictor, windows: list[tuple[int, int]], size: int, windows_per_call: int = 1
) -> Predictor:
    """``predict`` over a large latent: ``base`` on every ``size`` window at ``(x, y)`` (latent pixels),
    the predictions averaged where windows overlap. ``windows_per_call`` windows go through ``base`` as one
    batch (stacked along the batch, their conditions repeated): fewer, fuller UNet calls on a GPU."""
    if windows_per_call < 1:
        raise ValueError(f"windows_per_call must be at least 1, got {windows_per_call}")

    def predict(latent_model_input: torch.Tensor, t: torch.Tensor, cond: BranchConditions) -> torch.Tensor:
        total = torch.zeros_like(latent_model_input)
        count = torch.zeros_like(latent_model_input[:, :1])
        for start in range(0, len(windows), windows_per_call):
            group = [
                (..., slice(y, y + size), slice(x, x + size)) for x, y in windows[start : start + windows_per_call]
            ]
            k = len(group)
            stacked = cond
            if k > 1:  # window-major rows, each window's rows in the order of `cond`
                stacked = BranchConditions(
                    cond.text_embeds.repeat(k, 1, 1), cond.class_labels.repeat(k), cond.num_branches
                )
            outputs = base(torch.cat([latent_model_input[w] for w in group]), t, stacked).chunk(k)
            for window, output in zip(group, outputs, strict=True):
                total[window] += output
                count[window] += 1
        return total / count

    return predict


def tile_waves(tiles: list[tuple[int, int]], tile: int) -> list[list[int]]:
    """Indices of ``tiles`` (in growth order) grouped so that each group can be painted in one batch.

    Tile ``i`` goes one wave after the latest earlier tile it overlaps: it then sees exactly the canvas it
    would see painted one tile at a time, and tiles of one wave never overlap each other.
    """
    waves: list[int] = []
    for i, (x, y) in enumerate(tiles):
        before = [waves[j] for j, (u, v) in enumerate(tiles[:i]) if abs(u - x) < tile and abs(v - y) < tile]
        waves.append(max(before, default=-1) + 1)
    return [[i for i, w in enumerate(waves) if w == wave] for wave in range(max(waves, default=-1) + 1)]


def _caption_and_level(prompt: str, level: float | None, gsd_m: float | None) -> tuple[str, float]:
    caption, prefix_level = parse_prompt(prompt)
    if level is None and gsd_m is None:
        if prefix_level is None:
            raise ValueError("give the canvas resolution (--gsd or --level): every tile must share one level")
        return caption, prefix_level
    return caption, resolve_level(level, gsd_m)


@torch.no_grad()
def outpaint_tiles(
    pipe: Text2EarthInpaintPipeline,
    prompt: str,
    width: int,
    height: int,
    tile: int,
    overlap: int,
    level: float | None = None,
    gsd_m: float | None = None,
    init: PIL.Image.Image | None = None,
    num_inference_steps: int = 50,
    guidance_scale: float = 4.0,
    seed: int = 0,
    feather: int = 8,
    windows_per_call: int = 1,
    init_at: tuple[int, int] = (0, 0),
    callback: StepCallback | None = None,
) -> Canvas:
    """Grow a ``width`` x ``height`` canvas tile by tile with the inpainting model (tile ``i`` uses seed ``seed + i``).

    ``init`` goes at pixel ``init_at = (x, y)``. ``windows_per_call`` tiles that do not overlap are painted in
    one batch (:func:`tile_waves`): the same canvas as one tile at a time, in fewer UNet calls. One bar over the
    tiles (following ``pipe.set_progress_bar_config``); the per-tile sampling stays quiet. ``callback`` is
    passed to every sampling loop (progress, cancellation).
    """
    if windows_per_call < 1:
        raise ValueError(f"windows_per_call must be at least 1, got {windows_per_call}")
    caption, level = _caption_and_level(prompt, level, gsd_m)
    check_canvas(width, height, tile, overlap, pipe.vae_scale_factor)
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    known = np.zeros((height, width), dtype=bool)
    if init is not None:
        seed_image = np.asarray(init.convert("RGB"))
        h, w = seed_image.shape[:2]
        x0, y0 = init_at
        if x0 < 0 or y0 < 0 or y0 + h > height or x0 + w > width:
            raise ValueError(f"init image is {w}x{h} pixels at {init_at}: it does not fit the {width}x{height} canvas")
        canvas[y0 : y0 + h, x0 : x0 + w], known[y0 : y0 + h, x0 : x0 + w] = seed_image, True
    tiles = tile_grid(width, height, tile, overlap)
    # Batches of tiles that do not depend on each other (one wave), at most windows_per_call at a time.
    batches = [
        wave[i : i + windows_per_call]
        for wave in tile_waves(tiles, tile)
        for i in range(0, len(wave), windows_per_call)
    ]
    bar = pipe.progress_bar(total=len(tiles), desc="outpaint tiles", leave=True)
    for batch in batches:
        windows = [(slice(y, y + tile), slice(x, x + tile)) for x, y in (tiles[i] for i in batch)]
        todo = [(i, w) for i, w in zip(batch, windows, strict=True) if not known[w].all()]
        bar.update(len(batch))
        if not todo:
            continue
        with pipe.progress_disabled():
            out = pipe(
                [caption] * len(todo),
                [PIL.Image.fromarray(canvas[w]) for _, w in todo],
                [PIL.Image.fromarray(np.where(known[w], 0, 255).astype(np.uint8), mode="L") for _, w in todo],
                level=level,
                num_inference_steps=num_inference_steps,
                guidance_scale=guidance_scale,
                generator=[torch.Generator().manual_seed(seed + i) for i, _ in todo],
                output_type="pt",
                callback=callback,
            )
        for (_, window), image in zip(todo, out.images, strict=True):
            # The new pixels blend into the known ones over `feather` pixels on the known side (the
            # canvas under the mask is empty, so the edit pipeline's inward paste-back would blend to black).
            keep = torch.from_numpy(known[window].astype(np.float32))[None, None]
            keep_weight = feather_weights(keep, feather)[0].permute(1, 2, 0).numpy()
            generated = to_uint8(image).astype(np.float32)
            canvas[window] = np.rint(keep_weight * canvas[window] + (1.0 - keep_weight) * generated).astype(np.uint8)
            known[window] = True
    bar.close()
    return Canvas(image=canvas, caption=caption, tiles=tiles, tile=tile, level=level, mode="tiles")


@torch.no_grad()
def outpaint_joint(
    pipe: Text2EarthPipeline,
    prompt: str,
    width: int,
    height: int,
    tile: int,
    overlap: int,
    level: float | None = None,
    gsd_m: float | None = None,
    num_inference_steps: int = 50,
    guidance_scale: float = 4.0,
    seed: int = 0,
    windows_per_call: int = 1,
) -> Canvas:
    """Denoise the whole canvas jointly with the text-to-image model, averaging overlapping tile predictions.

    ``windows_per_call`` windows share one UNet call (same canvas, fewer calls). The denoising bar follows
    ``pipe.set_progress_bar_config``.
    """
    if is_inpainting_unet(pipe.unet):
        raise ValueError("joint (MultiDiffusion) outpainting uses the text-to-image model: load a Text2Earth folder")
    caption, level = _caption_and_level(prompt, level, gsd_m)
    factor = pipe.vae_scale_factor
    check_canvas(width, height, tile, overlap, factor)
    tiles = tile_grid(width, height, tile, overlap)
    windows = [(x // factor, y // factor) for x, y in tiles]
    predict = multidiffusion_predictor(unet_predictor(pipe.unet), windows, tile // factor, windows_per_call)
    request = SamplingRequest(
        captions=[caption],
        levels=[level],
        height=height,
        width=width,
        num_inference_steps=num_inference_steps,
        guidance_scale=guidance_scale,
        generator=torch.Generator().manual_seed(seed),
        output_type="np",
    )
    images = pipe.latents_to_output(pipe.denoise_latents(request, predict), request).images
    return Canvas(image=to_uint8(images[0]), caption=caption, tiles=tiles, tile=tile, level=level, mode="joint")
