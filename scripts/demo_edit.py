"""The editing demo: an edited real tile (before / mask / after) and a 4x-wide canvas, with seam figures.

``python -m scripts.demo_edit --inpaint-model outputs/demo_edit/model --model weights/demo --out outputs/demo``
writes ``edit_before_mask_after.png`` (real held-out Sentinel-2 tiles repainted from a prompt) and
``canvas_4x.png`` (one scene four tiles wide, grown tile by tile with the inpainting model, denoised
jointly with the text-to-image model, and, for reference, independent tiles side by side), plus each
canvas as PNG + JSON report. The seam figures are printed and written to ``canvas_seams.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import PIL.Image
import torch

from scripts.demo import real_tiles_by_gsd
from text2earth.apps.edit import save_canvas
from text2earth.core.paths import project_root, shipped
from text2earth.core.resolution import describe, gsd_to_level
from text2earth.io.files import write_atomic
from text2earth.io.images import labelled_grid, save_png, to_unit_float
from text2earth.pipelines.canvas import seam_visibility, tile_grid

# (prompt, ground resolution of the real tile, mask shape): clouds or water painted into cropland.
EDITS = [
    ("a thick field of bright cumulus clouds", 10.0, "ellipse"),
    ("a coastline where land meets open water", 20.0, "rectangle"),
    ("a thick field of bright cumulus clouds", 40.0, "rectangle"),
]
CANVAS_PROMPT = "a patchwork of farmland fields"


def demo_mask(size: int, shape: str) -> PIL.Image.Image:
    """A centred ellipse, or a rectangle over the right half, white = repaint."""
    y, x = np.mgrid[0:size, 0:size] + 0.5
    if shape == "ellipse":
        inside = ((x - size / 2) / (size * 0.3)) ** 2 + ((y - size / 2) / (size * 0.22)) ** 2 <= 1
    else:
        inside = (x > size * 0.5) & (y > size * 0.15) & (y < size * 0.85)
    return PIL.Image.fromarray(np.where(inside, 255, 0).astype(np.uint8), mode="L")


def render_edits(inpaint_model: str, shards: str, out_dir: Path, steps: int, seed: int) -> Path:
    from text2earth.pipelines.inpaint import Text2EarthInpaintPipeline

    pipe = Text2EarthInpaintPipeline.from_pretrained(inpaint_model)
    pipe.set_progress_bar_config(disable=True)
    real = real_tiles_by_gsd(shards, sorted({gsd for _, gsd, _ in EDITS}))
    rows, labels = [], []
    for prompt, gsd, shape in EDITS:
        if not real[gsd]:
            raise ValueError(f"no real cropland tile at {gsd:g} m in {shards}")
        before = real[gsd][0]
        mask = demo_mask(before.size[0], shape)
        results = [
            pipe(
                prompt,
                before,
                mask,
                gsd_m=gsd,
                num_inference_steps=steps,
                generator=torch.Generator().manual_seed(seed),
                paste_back=paste,
                feather=4,
            ).images[0]
            for paste in (True, False)
        ]
        rows.append([before, mask.convert("RGB"), *results])
        labels.append(f"{prompt} ({describe(gsd_to_level(gsd))})")
    size = rows[0][0].size[0] * 2
    grid = labelled_grid(
        rows,
        row_labels=labels,
        col_labels=["before (real tile)", "mask (white = repaint)", "after (paste-back)", "after (raw)"],
        cell_size=(size, size),
    )
    return save_png(grid, out_dir / "edit_before_mask_after.png", {"model": inpaint_model, "steps": str(steps)})


def independent_tiles(model: str, prompt: str, gsd: float, tiles: int, steps: int, seed: int) -> np.ndarray:
    """Reference for the seam metric: tiles generated separately and laid side by side."""
    from text2earth.pipelines.text2img import Text2EarthPipeline

    pipe = Text2EarthPipeline.from_pretrained(model)
    pipe.set_progress_bar_config(disable=True)
    generators = [torch.Generator().manual_seed(seed + i) for i in range(tiles)]
    out = pipe([prompt] * tiles, gsd_m=gsd, num_inference_steps=steps, generator=generators)
    return np.concatenate([np.asarray(image) for image in out.images], axis=1)


def render_canvases(
    inpaint_model: str, model: str, out_dir: Path, steps: int, seed: int, gsd: float = 10.0, overlap: int = 16
) -> tuple[Path, dict]:
    from text2earth.apps.edit import make_canvas

    tile = 64
    width, height = 4 * tile, tile
    figures, rows, labels = {}, [], []
    for mode, folder in (("tiles", inpaint_model), ("joint", model)):
        canvas = make_canvas(
            CANVAS_PROMPT, folder, width, height, tile, overlap, mode=mode, gsd_m=gsd, steps=steps, seed=seed
        )
        report = save_canvas(canvas, out_dir / f"canvas_{mode}.png", model=folder, seed=seed)
        figures[mode] = report
        rows.append([canvas.image])
        name = "tile by tile, inpainting model" if mode == "tiles" else "joint (MultiDiffusion), text-to-image model"
        labels.append(f"{name}: seam ratio {report['seam_ratio']:.2f}")
    side_by_side = independent_tiles(model, CANVAS_PROMPT, gsd, 4, steps, seed)
    seams = seam_visibility(to_unit_float(side_by_side), tile_grid(width, height, tile, 0), tile)
    figures["independent"] = {"seam_ratio": round(seams.ratio, 4), "tiles": 4, "overlap": 0}
    rows.append([side_by_side])
    labels.append(f"reference: 4 independent tiles, seam ratio {seams.ratio:.2f}")
    grid = labelled_grid(
        rows,
        row_labels=labels,
        col_labels=[
            f"'{CANVAS_PROMPT}', {describe(gsd_to_level(gsd))}, {width}x{height} px, tile {tile}, overlap {overlap}"
        ],
        cell_size=(width * 2, height * 2),
    )
    path = save_png(grid, out_dir / "canvas_4x.png", {"prompt": CANVAS_PROMPT, "gsd_m": f"{gsd:g}"})
    write_atomic(out_dir / "canvas_seams.json", json.dumps(figures, indent=2).encode())
    return path, figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inpaint-model", default=str(project_root() / "outputs/demo_edit/model"))
    parser.add_argument("--model", default=str(shipped("demo")), help="the text-to-image model (joint canvas mode)")
    parser.add_argument("--shards", default=str(project_root() / "data/embedded/val-*.tar"))
    parser.add_argument("--out", default=str(project_root() / "outputs/demo"))
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out_dir = Path(args.out)
    print(f"wrote {render_edits(args.inpaint_model, args.shards, out_dir, args.steps, args.seed)}")
    path, figures = render_canvases(args.inpaint_model, args.model, out_dir, args.steps, args.seed)
    print(f"wrote {path}")
    for mode, report in figures.items():
        print(f"seam ratio ({mode}): {report['seam_ratio']:.3f}  (1.0 = invisible)")


if __name__ == "__main__":
    main()
