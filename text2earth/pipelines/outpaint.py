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


def multidiffusion_predictor(base: Predictor, windows: list[tuple[int, int]], size: int) -> Predictor:
    """``predict`` over a large latent: ``base`` on every ``size`` window at ``(x, y)`` (latent pixels),
    the predictions averaged where windows overlap."""

    def predict(latent_model_input: torch.Tensor, t: torch.Tensor, cond: BranchConditions) -> torch.Tensor:
        total = torch.zeros_like(latent_model_input)
        count = torch.zeros_like(latent_model_input[:, :1])
        for x, y in windows:
            window = (..., slice(y, y + size), slice(x, x + size))
            total[window] += base(latent_model_input[window], t, cond)
            count[window] += 1
        return total / count

    return predict


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
    init_at: tuple[int, int] = (0, 0),
    callback: StepCallback | None = None,
) -> Canvas:
    """Grow a ``width`` x ``height`` canvas tile by tile with the inpainting model (tile ``i`` uses seed ``seed + i``).

    ``init`` goes at pixel ``init_at = (x, y)``. One bar over the tiles (following
    ``pipe.set_progress_bar_config``); the per-tile sampling stays quiet. ``callback`` is passed to every
    tile's sampling loop (progress, cancellation).
    """
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
    bar = pipe.progress_bar(tiles, desc="outpaint tiles", leave=True)
    for i, (x, y) in enumerate(bar):
        window = (slice(y, y + tile), slice(x, x + tile))
        if known[window].all():
            continue
        mask = np.where(known[window], 0, 255).astype(np.uint8)
        with pipe.progress_disabled():
            out = pipe(
                caption,
                PIL.Image.fromarray(canvas[window]),
                PIL.Image.fromarray(mask, mode="L"),
                level=level,
                num_inference_steps=num_inference_steps,
                guidance_scale=guidance_scale,
                generator=torch.Generator().manual_seed(seed + i),
                output_type="pt",
                callback=callback,
            )
        # The new pixels blend into the known ones over `feather` pixels on the known side (the
        # canvas under the mask is empty, so the edit pipeline's inward paste-back would blend to black).
        keep = torch.from_numpy(known[window].astype(np.float32))[None, None]
        keep_weight = feather_weights(keep, feather)[0].permute(1, 2, 0).numpy()
        generated = to_uint8(out.images[0]).astype(np.float32)
        canvas[window] = np.rint(keep_weight * canvas[window] + (1.0 - keep_weight) * generated).astype(np.uint8)
        known[window] = True
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
) -> Canvas:
    """Denoise the whole canvas jointly with the text-to-image model, averaging overlapping tile predictions.

    The denoising bar follows ``pipe.set_progress_bar_config``.
    """
    if is_inpainting_unet(pipe.unet):
        raise ValueError("joint (MultiDiffusion) outpainting uses the text-to-image model: load a Text2Earth folder")
    caption, level = _caption_and_level(prompt, level, gsd_m)
    factor = pipe.vae_scale_factor
    check_canvas(width, height, tile, overlap, factor)
    tiles = tile_grid(width, height, tile, overlap)
    windows = [(x // factor, y // factor) for x, y in tiles]
    predict = multidiffusion_predictor(unet_predictor(pipe.unet), windows, tile // factor)
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
