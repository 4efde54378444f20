"""`text2earth translate`: one condition file through a translator folder (ControlNet) to an output file."""

from __future__ import annotations

from pathlib import Path

import torch

from text2earth.io.bands import TASKS, DnRange, check_task, to_band, write_band
from text2earth.io.device import pick_device
from text2earth.io.images import save_png
from text2earth.io.pngmeta import image_text, model_fields, number
from text2earth.pipelines.translate import Text2EarthControlNetPipeline, load_condition


def translate_file(
    task: str,
    input_path: str | Path,
    out_path: str | Path,
    translator: str | Path,
    model: str | Path | None = None,
    prompt: str = "",
    level: float | None = None,
    gsd_m: float | None = None,
    steps: int = 20,
    guidance: float = 1.0,
    conditioning_scale: float = 1.0,
    seed: int = 0,
    dn_range: DnRange = "auto",
    bits: int = 8,
    scheduler: str | None = None,
    device: str | None = None,
) -> Path:
    """Translate one file with a translator folder; single-band targets are written back as one band."""
    check_task(task)
    condition = load_condition(input_path, task, dn_range)
    pipe, info = Text2EarthControlNetPipeline.from_translator(translator, model, scheduler)
    if info.get("task") != task:
        raise ValueError(f"translator {str(translator)!r} was trained for {info.get('task')!r}, not {task!r}")
    factor = pipe.vae_scale_factor
    if condition.shape[-1] % factor or condition.shape[-2] % factor:
        raise ValueError(f"the output size {tuple(condition.shape[-2:])} must be a multiple of {factor} pixels")
    pipe.to(pick_device(device))
    result = pipe(
        condition,
        prompt,
        level=level,
        gsd_m=gsd_m,
        num_inference_steps=steps,
        guidance_scale=guidance,
        conditioning_scale=conditioning_scale,
        generator=torch.Generator().manual_seed(seed),
        output_type="np",
    )
    image = result.images[0]
    text = image_text(
        prompt,
        result.levels[0],
        task=task,
        input=str(Path(input_path).resolve()),
        seed=seed,
        steps=steps,
        scheduler=scheduler or type(pipe.scheduler).__name__,
        guidance=number(guidance),
        conditioning_scale=number(conditioning_scale),
        dn_range=dn_range if isinstance(dn_range, str) else f"{number(dn_range[0])} {number(dn_range[1])}",
        **model_fields(translator, "translator"),
        **({} if model is None else model_fields(model)),
    )
    if TASKS[task][1] == "rgb":
        return save_png(image, out_path, text)
    return write_band(out_path, to_band(image), bits=bits)
