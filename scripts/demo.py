"""The demo figure: a model sampled across ground resolutions, beside real tiles of those resolutions.

``python -m scripts.demo --model weights/demo --out outputs/demo`` writes
``samples_by_resolution.png`` (rows: prompts, columns: levels; the same seed along a row, so only the
level changes) with a last row of real held-out tiles at each column's resolution.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from text2earth.core.paths import project_root, shipped
from text2earth.core.resolution import describe
from text2earth.io.images import decode_rgb, labelled_grid, save_png
from text2earth.io.shards import iter_samples

# Captions in the embedded data's vocabulary (what the demo model has seen).
DEFAULT_PROMPTS = [
    "a patchwork of farmland fields",
    "a coastline where land meets open water",
    "a salt marsh with winding tidal creeks",
    "a thick field of bright cumulus clouds",
]
# The Sentinel-2 ladder of the embedded data: 160, 80, 40, 20 and 10 m per pixel.
DEFAULT_GSDS = [160.0, 80.0, 40.0, 20.0, 10.0]
LEVEL_GUIDANCE = 8.0


def real_tiles_by_gsd(
    shards: str, gsds: list[float], per_gsd: int = 1, source: str = "sentinel2", scene_class: str = "cropland"
) -> dict[float, list]:
    """The first ``per_gsd`` real tiles of one scene class at each ground resolution in the shards."""
    found: dict[float, list] = {g: [] for g in gsds}
    for sample in iter_samples(shards):
        meta = json.loads(sample["json"])
        gsd = float(meta["gsd_m"])
        wanted = meta.get("source") == source and meta.get("scene_class") == scene_class
        if wanted and gsd in found and len(found[gsd]) < per_gsd:
            found[gsd].append(decode_rgb(sample["png"], sample["__key__"]))
        if all(len(v) >= per_gsd for v in found.values()):
            break
    return found


def render(
    model: str,
    out_dir: str,
    shards: str,
    prompts: list[str],
    gsds: list[float],
    steps: int = 50,
    guidance: float = 4.0,
    seed: int = 0,
    level_guidance: float | None = None,
) -> Path:
    from text2earth.core.resolution import gsd_to_level
    from text2earth.pipelines.text2img import Text2EarthPipeline

    pipe = Text2EarthPipeline.from_pretrained(model)
    pipe.set_progress_bar_config(disable=True)
    levels = [gsd_to_level(g) for g in gsds]
    rows, labels = [], []
    for prompt in prompts:
        generators = [torch.Generator().manual_seed(seed) for _ in levels]
        out = pipe(
            [prompt] * len(levels),
            level=levels,
            num_inference_steps=steps,
            guidance_scale=guidance,
            level_guidance_scale=level_guidance,
            generator=generators,
        )
        rows.append(out.images)
        labels.append(f"generated: {prompt}")
    real = real_tiles_by_gsd(shards, gsds)
    if all(real[g] for g in gsds):
        rows.append([real[g][0] for g in gsds])
        labels.append("real Sentinel-2 cropland tiles")
    size = rows[0][0].size[0] * 2
    grid = labelled_grid(rows, row_labels=labels, col_labels=[describe(v) for v in levels], cell_size=(size, size))
    path = save_png(
        grid,
        Path(out_dir) / "samples_by_resolution.png",
        {
            "model": model,
            "prompts": " | ".join(prompts),
            "levels": ",".join(f"{v:.2f}" for v in levels),
            "seed": str(seed),
            "steps": str(steps),
            "guidance": f"{guidance:g}",
            "level_guidance": "none" if level_guidance is None else f"{level_guidance:g}",
        },
    )
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(shipped("demo")))
    parser.add_argument("--out", default=str(project_root() / "outputs/demo"))
    # Train and val: the 160 m level has no held-out tiles (a 10 km tile does not fit the val band).
    parser.add_argument("--shards", default=str(project_root() / "data/embedded/*.tar"))
    parser.add_argument("--prompt", action="append", default=None)
    parser.add_argument("--gsd", type=float, action="append", default=None)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--guidance", type=float, default=4.0)
    parser.add_argument("--seed", type=int, default=0)
    # The level's own guidance scale: at 8 the demo's resolutions separate (README "Resolution fidelity").
    parser.add_argument("--level-guidance", type=float, default=LEVEL_GUIDANCE)
    args = parser.parse_args()
    path = render(
        args.model,
        args.out,
        args.shards,
        args.prompt or DEFAULT_PROMPTS,
        args.gsd or DEFAULT_GSDS,
        args.steps,
        args.guidance,
        args.seed,
        args.level_guidance,
    )
    info = (
        json.loads((Path(args.model) / "recipe.json").read_text())
        if (Path(args.model) / "recipe.json").exists()
        else {}
    )
    print(f"wrote {path}" + (f" (model trained {info.get('unet_steps')} UNet steps)" if info else ""))


if __name__ == "__main__":
    main()
