"""What the web app's jobs do: generate a tile at a map point, edit a scene under a mask, grow a scene.

The pipelines are the library's: :class:`Text2EarthPipeline` for a new tile, the inpainting pipeline
with ``paste_back`` for an edit (pixels outside the mask stay exact), and
:func:`~text2earth.pipelines.outpaint.outpaint_tiles` for growing (the seam handling of
``text2earth outpaint``). Without an inpainting model the app uses the text-to-image model's UNet
widened to 9 channels (:func:`~text2earth.models.inpainting.inpainting_unet_from`, mask channels zero):
it ignores the mask, so edits and new tiles are fresh samples blended in over ``feather`` pixels, which is
what the untrained inpainting model of ``make demo-edit`` starts from.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import threading
from typing import Any

import numpy as np
import PIL.Image
import torch

from text2earth.apps.serve.jobs import Job
from text2earth.apps.serve.scenes import Scene, SceneStore
from text2earth.core.errors import UserError
from text2earth.core.resolution import check_level, level_to_gsd
from text2earth.core.webmercator import check_lat_lon, global_pixel
from text2earth.io.device import inference_dtype, pick_device
from text2earth.io.images import to_uint8
from text2earth.models.components import load_from_folder
from text2earth.models.inpainting import inpainting_unet_from
from text2earth.pipelines.canvas import check_canvas
from text2earth.pipelines.inpaint import Text2EarthInpaintPipeline
from text2earth.pipelines.outpaint import outpaint_tiles
from text2earth.pipelines.sampling import unet_predictor
from text2earth.pipelines.text2img import Text2EarthPipeline

DIRECTIONS = {"east": (1, 0), "west": (-1, 0), "south": (0, 1), "north": (0, -1)}
MAX_TILES_PER_SIDE = 8  # a scene grows to at most 8 x 8 model tiles: bounded work per request
MAX_PROMPT = 300
MAX_MASK_PIXELS = 4096 * 4096  # a mask is as large as its scene; refuse anything larger before decoding


@dataclasses.dataclass(frozen=True)
class Settings:
    model: str
    inpaint_model: str | None
    steps: int
    guidance: float
    overlap: int | None  # None: a quarter of the tile
    feather: int
    device: str | None


class Engine:
    def __init__(self, settings: Settings, store: SceneStore) -> None:
        self.settings = settings
        self.store = store
        self._lock = threading.Lock()
        self._text2img: Text2EarthPipeline | None = None
        self._inpaint: Text2EarthInpaintPipeline | None = None

    # ------------------------------------------------------------------ models (loaded on first use)
    def pipelines(self) -> tuple[Text2EarthPipeline, Text2EarthInpaintPipeline]:
        with self._lock:
            if self._text2img is None:
                target = pick_device(self.settings.device)
                dtype = inference_dtype(target)
                parts = load_from_folder(self.settings.model, torch_dtype=dtype)
                self._text2img = Text2EarthPipeline.from_components(parts).to(target)
                if self.settings.inpaint_model:
                    inpaint = Text2EarthInpaintPipeline.from_pretrained(self.settings.inpaint_model, torch_dtype=dtype)
                else:
                    widened = dataclasses.replace(parts, unet=inpainting_unet_from(parts.unet))
                    inpaint = Text2EarthInpaintPipeline.from_components(widened)
                self._inpaint = inpaint.to(target)
                for pipe in (self._text2img, self._inpaint):
                    pipe.set_progress_bar_config(disable=True)
            assert self._inpaint is not None
            return self._text2img, self._inpaint

    @functools.cached_property
    def tile(self) -> int:
        """The model's image side in pixels: every tile the app samples has this size."""
        text2img, _ = self.pipelines()
        return text2img.unet.config.sample_size * text2img.vae_scale_factor

    @functools.cached_property
    def overlap(self) -> int:
        """Pixels a new tile overlaps the scene when growing (a quarter tile unless set); checked at start."""
        overlap = self.settings.overlap if self.settings.overlap is not None else self.tile // 4
        check_canvas(2 * self.tile, self.tile, self.tile, overlap, self.pipelines()[0].vae_scale_factor)
        return overlap

    # ------------------------------------------------------------------ input checks (before queueing)
    def check_generate(self, body: dict[str, Any]) -> dict[str, Any]:
        prompt = _prompt(body)
        level = _number(body, "level")
        check_level(level)
        if level_to_gsd(level) is None:
            raise UserError("level 0 means 'unknown resolution': a tile on the map needs a level above 0")
        lat, lon = check_lat_lon(_number(body, "lat"), _number(body, "lon"))
        return {"prompt": prompt, "level": level, "lat": lat, "lon": lon, "seed": _seed(body)}

    def check_edit(self, body: dict[str, Any]) -> dict[str, Any]:
        scene = self.store.get(str(body.get("scene_id", "")))
        mask = _decode_mask(body.get("mask"), scene)
        return {"scene_id": scene.id, "prompt": _prompt(body), "mask": mask, "seed": _seed(body)}

    def check_extend(self, body: dict[str, Any]) -> dict[str, Any]:
        scene = self.store.get(str(body.get("scene_id", "")))
        direction = body.get("direction")
        if direction not in DIRECTIONS:
            raise UserError(f"direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
        limit = MAX_TILES_PER_SIDE * self.tile
        dx, dy = DIRECTIONS[direction]
        if scene.width + abs(dx) * self.tile > limit or scene.height + abs(dy) * self.tile > limit:
            raise UserError(f"the scene is at its largest ({MAX_TILES_PER_SIDE} tiles a side): start a new one")
        prompt = _prompt(body) if body.get("prompt") else scene.prompt
        return {"scene_id": scene.id, "direction": direction, "prompt": prompt, "seed": _seed(body)}

    # ------------------------------------------------------------------ the work (in the queue's thread)
    def run(self, job: Job) -> str:
        return {"generate": self._generate, "edit": self._edit, "extend": self._extend}[job.op](job)

    def _generate(self, job: Job) -> str:
        p = job.params
        text2img, _ = self.pipelines()
        steps = self.settings.steps
        base = unet_predictor(text2img.unet)
        calls = {"n": 0}

        def predict(latents: torch.Tensor, t: torch.Tensor, cond: Any) -> torch.Tensor:
            job.report(calls["n"] / steps)  # once per step: progress, and the place a cancel takes effect
            calls["n"] += 1
            return base(latents, t, cond)

        result = text2img(
            p["prompt"],
            level=p["level"],
            num_inference_steps=steps,
            guidance_scale=self.settings.guidance,
            generator=torch.Generator().manual_seed(p["seed"]),
            output_type="np",
            predict=predict,
        )
        image = to_uint8(result.images[0])
        height, width = image.shape[:2]
        col, row = global_pixel(p["lat"], p["lon"], p["level"])
        scene = Scene(
            id=self.store.new_id(),
            level=p["level"],
            col=round(col - width / 2),  # whole pixels of the level's grid: grown tiles line up exactly
            row=round(row - height / 2),
            width=width,
            height=height,
            prompt=result.prompts[0],
            seed=p["seed"],
            model=self.settings.model,
        )
        scene.placement.check_inside_world()
        self.store.save(scene, image, {"op": "generate", "lat": p["lat"], "lon": p["lon"]})
        return scene.id

    def _edit(self, job: Job) -> str:
        p = job.params
        _, inpaint = self.pipelines()
        scene = self.store.get(p["scene_id"])
        source = self.store.image(scene)
        steps = self.settings.steps
        result = inpaint(
            p["prompt"],
            PIL.Image.fromarray(source),
            p["mask"],
            level=scene.level,
            num_inference_steps=steps,
            guidance_scale=self.settings.guidance,
            generator=torch.Generator().manual_seed(p["seed"]),
            paste_back=True,
            feather=self.settings.feather,
            output_type="np",
            callback=lambda i, t, latents: job.report((i + 1) / steps),
        )
        edited = dataclasses.replace(scene, history=list(scene.history))
        self.store.save(edited, to_uint8(result.images[0]), {"op": "edit", "prompt": p["prompt"]})
        return scene.id

    def _extend(self, job: Job) -> str:
        p = job.params
        _, inpaint = self.pipelines()
        scene = self.store.get(p["scene_id"])
        tile, (dx, dy) = self.tile, DIRECTIONS[p["direction"]]
        width, height = scene.width + abs(dx) * tile, scene.height + abs(dy) * tile
        init_at = (tile if dx < 0 else 0, tile if dy < 0 else 0)
        new_tiles = (height // tile) if dx else (width // tile)
        total = max(1, new_tiles * 2) * self.settings.steps  # an upper bound on the sampling steps to come
        calls = {"n": 0}

        def callback(i: int, t: torch.Tensor, latents: torch.Tensor) -> None:
            calls["n"] += 1
            job.report(min(calls["n"] / total, 0.99))

        with inpaint.progress_disabled():
            canvas = outpaint_tiles(
                inpaint,
                p["prompt"],
                width=width,
                height=height,
                tile=tile,
                overlap=self.overlap,
                level=scene.level,
                init=PIL.Image.fromarray(self.store.image(scene)),
                init_at=init_at,
                num_inference_steps=self.settings.steps,
                guidance_scale=self.settings.guidance,
                seed=p["seed"],
                feather=self.settings.feather,
                callback=callback,
            )
        grown = dataclasses.replace(
            scene, col=scene.col - init_at[0], row=scene.row - init_at[1], history=list(scene.history)
        )
        grown.width, grown.height = width, height
        grown.placement.check_inside_world()
        self.store.save(grown, canvas.image, {"op": "extend", "direction": p["direction"], "seams": canvas.seams.ratio})
        return scene.id


def _prompt(body: dict[str, Any]) -> str:
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise UserError("give a prompt: what to draw")
    if len(prompt) > MAX_PROMPT:
        raise UserError(f"the prompt is {len(prompt)} characters long; at most {MAX_PROMPT}")
    return prompt.strip()


def _number(body: dict[str, Any], key: str) -> float:
    value = body.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(f"{key} must be a number, got {value!r}")
    return float(value)


def _seed(body: dict[str, Any]) -> int:
    seed = body.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise UserError(f"seed must be a whole number in 0..2**32-1, got {seed!r}")
    return seed


def _decode_mask(data: Any, scene: Scene) -> PIL.Image.Image:
    """A PNG data URL (white = repaint) of the scene's size; its size is checked before any pixel is decoded."""
    import base64
    import binascii

    prefix = "data:image/png;base64,"
    if not isinstance(data, str) or not data.startswith(prefix):
        raise UserError("mask must be a PNG data URL (data:image/png;base64,...)")
    try:
        raw = base64.b64decode(data[len(prefix) :], validate=True)
        image = PIL.Image.open(io.BytesIO(raw), formats=["PNG"])
    except (binascii.Error, ValueError, OSError, PIL.Image.DecompressionBombError) as exc:
        raise UserError(f"mask is not a readable PNG: {exc}") from None
    width, height = image.size
    if width * height > MAX_MASK_PIXELS or (width, height) != (scene.width, scene.height):
        raise UserError(f"mask is {width}x{height} pixels; the scene is {scene.width}x{scene.height}")
    try:
        mask = np.asarray(image.convert("L"))
    except (OSError, ValueError) as exc:
        raise UserError(f"mask is not a readable PNG: {exc}") from None
    if not (mask >= 128).any():
        raise UserError("the mask is empty: paint the area to repaint first")
    return PIL.Image.fromarray(np.where(mask >= 128, 255, 0).astype(np.uint8), mode="L")
