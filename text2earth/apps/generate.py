"""Generate images from text into a folder: one PNG per image plus a grid. Used by `text2earth generate` and the demo.

Each PNG's text chunks record everything that made it (prompt, negative prompt, level / gsd, seed, steps,
scheduler, guidance scales, size, modality / LoRA, the model folder and its content hash), so
:func:`generate_from_png` makes the same pixels again.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from text2earth.core.errors import UserError, describe_os_error
from text2earth.core.resolution import parse_prompt, resolve_levels
from text2earth.io.device import inference_dtype, pick_device
from text2earth.io.files import content_hash
from text2earth.io.images import make_grid, read_png_text, save_png, to_unit_float
from text2earth.io.pngmeta import image_text, model_fields, number
from text2earth.models.level_range import warn_outside_range


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
    from text2earth.io.bands import SINGLE_BAND, check_modality, to_band
    from text2earth.models.lora import attach_lora
    from text2earth.pipelines.text2img import Text2EarthPipeline

    if not prompts:
        raise ValueError("give at least one prompt")
    if n < 1:
        raise ValueError(f"--n must be at least 1, got {n}")
    requested = resolve_levels(len(prompts), level, gsd_m)  # bad resolution input fails before any model loads
    warn_outside_range(model, [parse_prompt(p)[1] or lvl for p, lvl in zip(prompts, requested, strict=True)])
    check_modality(modality)
    target = pick_device(device)
    pipe = Text2EarthPipeline.from_pretrained(model, scheduler=scheduler, torch_dtype=inference_dtype(target)).to(
        target
    )
    modality = attach_lora(pipe.unet, model, modality, lora, lora_scale)
    if fast:
        pipe.enable_fast_sampling()
    # Image i is sampled alone, from a generator seeded seed + i: batched CPU kernels round differently
    # from single ones, so this is what lets one image be made again on its own (generate --from) to the pixel.
    images: list[Any] = []
    captions: list[str] = []
    levels: list[float] = []
    with _memory_hint(height, width):
        for i in range(n * len(prompts)):
            result = pipe(
                [prompts[i // n]],
                level=level,
                gsd_m=gsd_m,
                num_inference_steps=steps,
                guidance_scale=guidance,
                level_guidance_scale=level_guidance,
                negative_prompt=negative_prompt,
                generator=torch.Generator(device="cpu").manual_seed(seed + i),
                height=height,
                width=width,
            )
            images += result.images
            captions += result.prompts
            levels += result.levels
    if fast and log is not None:
        log(pipe.fast.summary())
    out = Path(out_dir)
    recorded = {
        "negative_prompt": negative_prompt,
        "steps": steps,
        "scheduler": scheduler or f"{type(pipe.scheduler).__name__} (the model's own)",
        "guidance": number(guidance),
        "level_guidance": None if level_guidance is None else number(level_guidance),
        **model_fields(model),
        "modality": modality,
        "lora": str(Path(lora).resolve()) if lora else None,
        "lora_scale": number(lora_scale) if lora or modality != "rgb" else None,
    }
    written: list[Path] = []
    shown: list[Any] = []  # what was written (single bands for nir / pan / sar), for the grid
    try:
        for i, (image, caption, lvl) in enumerate(zip(images, captions, levels, strict=True)):
            width_px, height_px = image.size
            text = image_text(caption, lvl, seed=seed + i, width=width_px, height=height_px, **recorded)
            if modality in SINGLE_BAND:
                image = to_band(to_unit_float(image))
            shown.append(image)
            written.append(save_png(image, out / f"{i:03d}_L{lvl:g}_seed{seed + i}.png", text))
        written.append(save_png(make_grid(shown, nrow=n), out / "grid.png", {"prompts": " | ".join(prompts)}))
    except OSError as exc:  # a full disk, say: each file is whole or absent; say which are missing
        total = n * len(prompts)
        raise UserError(
            f"{describe_os_error(exc)}; wrote {min(len(written), total)} of {total} images (and no grid) to {out}: "
            "free space and run the same command again (the same seeds give the same images)"
        ) from None
    return written


@contextlib.contextmanager
def _memory_hint(height: int | None, width: int | None) -> Iterator[None]:
    """Out of memory while sampling (one image at a time): one line with what was asked and needed."""
    try:
        yield
    except (torch.OutOfMemoryError, RuntimeError) as exc:
        asked = re.search(r"allocate (\d+) bytes|Tried to allocate ([\d.]+ [KMG]iB)", str(exc))
        if not isinstance(exc, torch.OutOfMemoryError) and asked is None:
            raise
        need = asked and (f"{int(asked[1]) / 2**30:.1f} GiB" if asked[1] else asked[2])
        size = f"{height}x{width}" if height and width else "the model's size"
        raise UserError(
            f"not enough memory to sample an image of {size} (one allocation needed {need or 'more'}): "
            "lower the size, or use a device with more memory"
        ) from None


def generate_from_png(png: str | Path, out_dir: str, model: str | None = None, device: str | None = None) -> list[Path]:
    """Make the image recorded in ``png``'s text chunks again (into ``out_dir``); ``model`` replaces the
    recorded folder (a different content hash is reported on stderr, the pixels may then differ)."""
    import sys

    from text2earth.pipelines.schedulers import SCHEDULERS

    text = read_png_text(png)
    missing = [key for key in ("prompt", "level", "seed", "steps", "guidance", "model") if key not in text]
    if missing:
        raise UserError(f"{png} does not record how it was made (missing: {', '.join(missing)})")
    model = model or text["model"]
    if "model_sha256" in text and Path(model).is_dir() and content_hash(model) != text["model_sha256"]:
        print(
            f"text2earth: warning: {model} is not the model folder that made {png} (content differs)", file=sys.stderr
        )
    scheduler = text.get("scheduler")
    return generate_to_folder(
        prompts=[text["prompt"]],
        model=model,
        out_dir=out_dir,
        level=float(text["level"]),
        n=1,
        seed=int(text["seed"]),
        steps=int(text["steps"]),
        guidance=float(text["guidance"]),
        level_guidance=float(text["level_guidance"]) if "level_guidance" in text else None,
        negative_prompt=text.get("negative_prompt"),
        scheduler=scheduler if scheduler in SCHEDULERS else None,
        height=int(text["height"]) if "height" in text else None,
        width=int(text["width"]) if "width" in text else None,
        device=device,
        modality=text.get("modality", "rgb"),
        lora=text.get("lora"),
        lora_scale=float(text.get("lora_scale", 1.0)),
    )
