"""`text2earth edit` and `text2earth outpaint`: load a model folder, run a pipeline, write PNGs.

A canvas placed on the map (a :class:`~text2earth.core.webmercator.Location`) also gets a COG in
EPSG:3857 and a STAC item (:mod:`text2earth.io.geo`, the ``[geo]`` extra).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from text2earth.core.resolution import level_to_gsd
from text2earth.core.webmercator import Location
from text2earth.io.device import inference_dtype, pick_device
from text2earth.io.files import write_atomic
from text2earth.io.geo import georeference
from text2earth.io.images import image_to_tensor, load_image, load_rgb, mask_to_tensor, save_png
from text2earth.io.pngmeta import image_text, model_fields, number
from text2earth.pipelines.outpaint import MODES, Canvas


def edit_to_file(
    image: str,
    mask: str,
    prompt: str,
    model: str,
    out: str,
    level: float | None = None,
    gsd_m: float | None = None,
    steps: int = 50,
    guidance: float = 4.0,
    seed: int = 0,
    paste_back: bool = False,
    feather: int = 8,
    device: str | None = None,
) -> Path:
    """Repaint the white part of ``mask`` in ``image`` from ``prompt``; write the result PNG to ``out``."""
    from text2earth.pipelines.inpaint import (
        Text2EarthInpaintPipeline,
        check_image_and_mask,
    )

    source, mask_image = load_rgb(image), load_image(mask)
    # Bad image / mask input fails before the model loads.
    check_image_and_mask(image_to_tensor(source), mask_to_tensor(mask_image), 1)
    target = pick_device(device)
    pipe = Text2EarthInpaintPipeline.from_pretrained(model, torch_dtype=inference_dtype(target)).to(target)
    result = pipe(
        prompt,
        source,
        mask_image,
        level=level,
        gsd_m=gsd_m,
        num_inference_steps=steps,
        guidance_scale=guidance,
        generator=torch.Generator().manual_seed(seed),
        paste_back=paste_back,
        feather=feather,
    )
    text = image_text(
        result.prompts[0],
        result.levels[0],
        seed=seed,
        image=str(Path(image).resolve()),
        mask=str(Path(mask).resolve()),
        steps=steps,
        scheduler=type(pipe.scheduler).__name__,
        guidance=number(guidance),
        paste_back=paste_back,
        feather=feather,
        **model_fields(model),
    )
    return save_png(result.images[0], out, text)


def make_canvas(
    prompt: str,
    model: str,
    width: int,
    height: int,
    tile: int,
    overlap: int,
    mode: str = "tiles",
    level: float | None = None,
    gsd_m: float | None = None,
    init: str | None = None,
    steps: int = 50,
    guidance: float = 4.0,
    seed: int = 0,
    feather: int = 8,
    device: str | None = None,
    show_progress: bool = True,
    windows_per_call: int = 1,
) -> Canvas:
    """A canvas from a model folder: ``tiles`` needs an inpainting folder, ``joint`` a text-to-image one.

    ``windows_per_call`` windows share one UNet call (the same canvas; faster on a GPU)."""
    from text2earth.pipelines.inpaint import Text2EarthInpaintPipeline
    from text2earth.pipelines.outpaint import outpaint_joint, outpaint_tiles
    from text2earth.pipelines.text2img import Text2EarthPipeline

    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if init is not None and mode != "tiles":
        raise ValueError("--init grows a canvas from an image: it needs --mode tiles (the inpainting model)")
    target = pick_device(device)
    common = {
        "width": width,
        "height": height,
        "tile": tile,
        "overlap": overlap,
        "level": level,
        "gsd_m": gsd_m,
        "num_inference_steps": steps,
        "guidance_scale": guidance,
        "seed": seed,
        "windows_per_call": windows_per_call,
    }
    if mode == "tiles":
        seed_image = load_rgb(init) if init else None
        pipe = Text2EarthInpaintPipeline.from_pretrained(model, torch_dtype=inference_dtype(target)).to(target)
        pipe.set_progress_bar_config(disable=None if show_progress else True)
        return outpaint_tiles(pipe, prompt, init=seed_image, feather=feather, **common)
    pipe = Text2EarthPipeline.from_pretrained(model, torch_dtype=inference_dtype(target)).to(target)
    pipe.set_progress_bar_config(disable=None if show_progress else True)
    return outpaint_joint(pipe, prompt, **common)


def save_canvas(
    canvas: Canvas, out: str | Path, model: str, seed: int, location: Location | None = None
) -> dict[str, object]:
    """PNG (metadata + seam figures in its text chunks) and a ``.json`` beside it; placed at ``location``,
    a COG and a STAC item too (their paths and the pixel sizes under ``geo`` in the report)."""
    out = Path(out)
    seams = canvas.seams
    report = {
        "mode": canvas.mode,
        "width": canvas.image.shape[1],
        "height": canvas.image.shape[0],
        "tile": canvas.tile,
        "tiles": len(canvas.tiles),
        "level": canvas.level,
        "gsd_m": level_to_gsd(canvas.level),
        "seam_gradient": round(seams.seam, 5),
        "inside_gradient": round(seams.inside, 5),
        "seam_ratio": round(seams.ratio, 4),
    }
    text = image_text(
        canvas.caption,
        canvas.level,
        seed=seed,
        mode=canvas.mode,
        seam_ratio=report["seam_ratio"],
        **model_fields(model),
    )
    report["png"] = str(save_png(canvas.image, out, text))
    if location is not None:
        height, width = canvas.image.shape[:2]
        placement = location.place(canvas.level, width, height)
        properties = {"prompt": canvas.caption, "level": canvas.level, "seed": seed, "model": model}
        report["geo"] = georeference(out, placement, {**properties, "location": location.describe()})
    write_atomic(out.with_suffix(".json"), json.dumps(report, indent=2).encode())
    return report
