"""Generation for evaluation: batched, resumable, one PNG per image through ``Text2EarthPipeline``.

Every image has a key, a caption, a level, a label (the scene class, for zero-shot OA) and its own seed,
so a restarted run skips the PNGs already written (atomic writes: an existing file is a finished one)
and produces exactly the images an uninterrupted run would have.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import PIL.Image
import torch
from tqdm.auto import tqdm

from text2earth.io.images import load_rgb, read_png_text, save_png
from text2earth.io.pngmeta import image_text

_KEY_RE = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class EvalPrompt:
    """One image to generate: file name ``{key}.png``."""

    key: str
    caption: str
    level: float
    label: str = ""
    seed: int = 0


@dataclass(frozen=True)
class GeneratedImage:
    path: Path
    caption: str
    level: float
    label: str

    def load(self) -> PIL.Image.Image:
        return load_rgb(self.path)


class LazyImages(Sequence[PIL.Image.Image]):
    """Generated images read from their files on access: metrics over tens of thousands of images hold
    one batch in memory, not the whole set."""

    def __init__(self, items: Sequence[GeneratedImage]) -> None:
        self.items = list(items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index):  # int -> image, slice -> list of images
        if isinstance(index, slice):
            return [item.load() for item in self.items[index]]
        return self.items[index].load()


def prompts_for(
    captions: Sequence[str],
    labels: Sequence[str],
    levels: Sequence[float],
    images_per_caption: int = 1,
    seed: int = 0,
    prefix: str = "",
) -> list[EvalPrompt]:
    """``images_per_caption`` prompts per caption, each with its own seed ``seed + index``."""
    if not captions:
        raise ValueError("no captions to generate from")
    if not len(captions) == len(labels) == len(levels):
        raise ValueError(f"got {len(captions)} captions, {len(labels)} labels and {len(levels)} levels")
    prompts = []
    for i, (caption, label, level) in enumerate(zip(captions, labels, levels, strict=True)):
        for j in range(images_per_caption):
            index = i * images_per_caption + j
            prompts.append(EvalPrompt(f"{prefix}{index:06d}", caption, float(level), label, seed + index))
    return prompts


def generate_images(
    pipe,
    prompts: Sequence[EvalPrompt],
    out_dir: str | Path,
    batch_size: int = 16,
    num_inference_steps: int = 50,
    guidance_scale: float = 4.0,
    desc: str = "generating",
    level_guidance_scale: float | None = None,
) -> list[GeneratedImage]:
    """Write ``{key}.png`` for every prompt not yet written; return all images in prompt order.

    ``level_guidance_scale``: a separate guidance scale for the level (see ``TextLevelGuidance``)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    keys = [p.key for p in prompts]
    if len(set(keys)) != len(keys):
        raise ValueError("prompt keys must be unique")
    bad = [k for k in keys if not _KEY_RE.match(k)]
    if bad:
        raise ValueError(f"prompt keys must be plain file names, got {bad[0]!r}")
    out = Path(out_dir)
    done = [p for p in prompts if (out / f"{p.key}.png").is_file()]
    for prompt in done:
        _check_same_settings(
            out / f"{prompt.key}.png", prompt, num_inference_steps, guidance_scale, level_guidance_scale
        )
    todo = [p for p in prompts if p not in done]
    # One bar over the images; the pipeline's per-batch sampling bars stay off.
    bar = tqdm(total=len(prompts), initial=len(prompts) - len(todo), desc=desc, unit="img")
    with bar, pipe.progress_disabled():
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            result = pipe(
                [p.caption for p in batch],
                level=[p.level for p in batch],
                num_inference_steps=num_inference_steps,
                guidance_scale=guidance_scale,
                level_guidance_scale=level_guidance_scale,
                generator=[torch.Generator(device="cpu").manual_seed(p.seed) for p in batch],
            )
            for prompt, image in zip(batch, result.images, strict=True):
                text = _png_text(prompt, num_inference_steps, guidance_scale, level_guidance_scale)
                save_png(image, out / f"{prompt.key}.png", text)
            bar.update(len(batch))
    return [GeneratedImage(out / f"{p.key}.png", p.caption, p.level, p.label) for p in prompts]


def _png_text(prompt: EvalPrompt, steps: int, guidance: float, level_guidance: float | None) -> dict[str, str]:
    return image_text(
        prompt.caption,
        prompt.level,
        label=prompt.label,
        seed=prompt.seed,
        steps=steps,
        guidance=f"{guidance:g}",
        level_guidance=None if level_guidance is None else f"{level_guidance:g}",
    )


def _check_same_settings(
    path: Path, prompt: EvalPrompt, steps: int, guidance: float, level_guidance: float | None
) -> None:
    """A resumed run may only keep images made from the same prompt, level, seed and sampler settings."""
    found, wanted = read_png_text(path), _png_text(prompt, steps, guidance, level_guidance)
    wanted.setdefault("level_guidance", "")  # an image made with a level scale is not one made without
    found.setdefault("level_guidance", "")
    differs = [k for k, v in wanted.items() if found.get(k) != v]
    if differs:
        raise ValueError(
            f"{path} was generated with other settings ({', '.join(differs)} differ): "
            "use a new output folder or delete it"
        )
