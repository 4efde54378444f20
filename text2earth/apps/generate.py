"""Generate images from text into a folder: one PNG per image (prompt, level, gsd, seed in its text
chunks) plus a grid. Used by `text2earth generate` and the demo."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from text2earth.core.errors import UserError, describe_os_error
from text2earth.core.resolution import resolve_levels
from text2earth.io.device import inference_dtype, pick_device
from text2earth.io.images import make_grid, save_png, to_unit_float
from text2earth.io.pngmeta import image_text


def generate_to_folder(
    prompts: list[str],
    model: str,
    out_dir: str,
    level: float | None = None,
    gsd_m: float | None = None,
    n: int = 4,
    seed: int = 0,
    steps: int = 50,
    guidance: float = 4.0,
    level_guidance: float | None = None,
    negative_prompt: str | None = None,
    scheduler: str | None = None,
    height: int | None = None,
    width: int | None = None,
    device: str | None = None,
    modality: str = "rgb",
    lora: str | None = None,
    lora_scale: float = 1.0,
    fast: bool = False,
    log: Callable[[str], None] | None = None,
) -> list[Path]:
    """Write ``n`` images per prompt and ``grid.png``; return the paths (grid last).

    ``modality`` (nir, pan, sar) loads the model's LoRA for it, ``lora`` any adapter folder, at ``lora_scale``;
    single-band modalities are written as single-band PNGs. ``fast`` turns on
    :meth:`~text2earth.pipelines.text2img.Text2EarthPipeline.enable_fast_sampling`; ``log`` receives its
    one-line report (warm-up time, graph compilations).
    """
    from text2earth.io.bands import check_modality
    from text2earth.models.lora import attach_lora
    from text2earth.pipelines.text2img import Text2EarthPipeline

    if not prompts:
        raise ValueError("give at least one prompt")
    if n < 1:
        raise ValueError(f"--n must be at least 1, got {n}")
    resolve_levels(len(prompts), level, gsd_m)  # bad resolution input fails before any model loads
    check_modality(modality)
    target = pick_device(device)
    pipe = Text2EarthPipeline.from_pretrained(model, scheduler=scheduler, torch_dtype=inference_dtype(target)).to(
        target
    )
    modality = attach_lora(pipe.unet, model, modality, lora, lora_scale)
    if fast:
        pipe.enable_fast_sampling()
    # One generator per image, seeded seed + i: any single image can be reproduced alone.
    generators = [torch.Generator(device="cpu").manual_seed(seed + i) for i in range(n * len(prompts))]
    with _memory_hint(n * len(prompts), height, width):
        result = pipe(
            prompts,
            level=level,
            gsd_m=gsd_m,
            num_images_per_prompt=n,
            num_inference_steps=steps,
            guidance_scale=guidance,
            level_guidance_scale=level_guidance,
            negative_prompt=negative_prompt,
            generator=generators,
            height=height,
            width=width,
        )
    if fast and log is not None:
        log(pipe.fast.summary())
    out = Path(out_dir)
    written: list[Path] = []
    try:
        return _write_images(result, out, prompts, n, seed, model, steps, guidance, modality, lora, lora_scale, written)
    except OSError as exc:  # a full disk, say: each file is whole or absent; say which are missing
        total = n * len(prompts)
        raise UserError(
            f"{describe_os_error(exc)}; wrote {min(len(written), total)} of {total} images (and no grid) to {out}: "
            "free space and run the same command again (the same seeds give the same images)"
        ) from None


@contextlib.contextmanager
def _memory_hint(images: int, height: int | None, width: int | None) -> Iterator[None]:
    """Out of memory while sampling (all images are one batch): one line with what was asked and needed."""
    try:
        yield
    except (torch.OutOfMemoryError, RuntimeError) as exc:
        asked = re.search(r"allocate (\d+) bytes|Tried to allocate ([\d.]+ [KMG]iB)", str(exc))
        if not isinstance(exc, torch.OutOfMemoryError) and asked is None:
            raise
        need = asked and (f"{int(asked[1]) / 2**30:.1f} GiB" if asked[1] else asked[2])
        size = f"{height}x{width}" if height and width else "the model's size"
        raise UserError(
            f"not enough memory to sample {images} images of {size} at once (one allocation needed {need or 'more'}): "
            "lower --n or the size, or run more commands with other --seed values"
        ) from None


def _write_images(
    result: Any,
    out: Path,
    prompts: list[str],
    n: int,
    seed: int,
    model: str,
    steps: int,
    guidance: float,
    modality: str,
    lora: str | None,
    lora_scale: float,
    written: list[Path],
) -> list[Path]:
    from text2earth.io.bands import SINGLE_BAND, to_band

    shown = []  # what was written (single bands for nir / pan / sar), for the grid
    for i, (image, caption, lvl) in enumerate(zip(result.images, result.prompts, result.levels, strict=True)):
        text = image_text(
            caption,
            lvl,
            seed=seed + i,
            model=model,
            steps=steps,
            guidance=f"{guidance:g}",
            modality=modality,
            lora=lora,
            lora_scale=f"{lora_scale:g}" if lora or modality != "rgb" else None,
        )
        if modality in SINGLE_BAND:
            image = to_band(to_unit_float(image))
        shown.append(image)
        written.append(save_png(image, out / f"{i:03d}_L{lvl:g}_seed{seed + i}.png", text))
    written.append(save_png(make_grid(shown, nrow=n), out / "grid.png", {"prompts": " | ".join(prompts)}))
    return written
