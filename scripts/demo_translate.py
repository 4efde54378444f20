"""``make demo-translate``: the shipped translators on held-out real tiles, and text-to-NIR / PAN by LoRA.

Writes into ``--out``: ``{task}_strip.png`` (input / ControlNet output / target) and ``translate_eval.json``
for each translator, ``cross_modal.png`` (the same prompts generated as RGB by the base model and as NIR and
PAN through the model's LoRA adapters, switched on one UNet), and prints the PSNR / SSIM table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from scripts.translation_eval import evaluate_translator, markdown_table
from text2earth.core.paths import project_root, shipped
from text2earth.io.images import labelled_grid, save_png
from text2earth.models.lora import load_lora, modality_lora, use_lora

PROMPTS = [
    "a patchwork of farmland fields",
    "a coastline where land meets open water",
    "dense green forest",
    "a thick field of bright cumulus clouds",
]


@torch.no_grad()
def cross_modal_figure(
    model: str | Path, out: Path, level: float = 12.093, steps: int = 20, seed: int = 0
) -> tuple[Path, dict[str, float]]:
    """Rows: RGB (base model), NIR and PAN (LoRA adapters, shown as the single band ``generate`` writes);
    columns: prompts; the same seeds in every row. Also returns each row's mean chroma (max - min over the
    RGB channels of the raw output, in [0, 1]): single-band training data has none, so a LoRA that learned
    its modality lowers it."""
    from text2earth.pipelines.text2img import Text2EarthPipeline

    pipe = Text2EarthPipeline.from_pretrained(model)
    pipe.set_progress_bar_config(disable=True)
    rows, labels, chroma = [], [], {}
    for modality in ("rgb", "nir", "pan"):
        if modality == "rgb":
            labels.append("RGB (base model)")
        else:
            if modality not in getattr(pipe.unet, "peft_config", {}):
                load_lora(pipe.unet, modality_lora(model, modality), modality)
            use_lora(pipe.unet, modality, 1.0)
            # Single bands are shown grey; after 800 CPU steps the adapters still stay close to the base model.
            labels.append(f"{modality.upper()} via LoRA, one band")
        images = pipe(
            PROMPTS,
            level=level,
            num_inference_steps=steps,
            generator=[torch.Generator().manual_seed(seed + i) for i in range(len(PROMPTS))],
            output_type="pt",
        ).images
        chroma[modality] = round(float((images.amax(dim=1) - images.amin(dim=1)).mean()), 4)
        rows.append(images if modality == "rgb" else images.mean(dim=1, keepdim=True).expand_as(images))
    grid = labelled_grid(rows, labels, PROMPTS, cell_size=96)
    return save_png(grid, out / "cross_modal.png", {"model": str(model), "level": f"{level:g}"}), chroma


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=str(shipped("demo")))
    parser.add_argument("--translators", nargs="+", default=None, help="default: every folder in weights/translate")
    parser.add_argument("--pairs", default=str(project_root() / "data/pairs"))
    parser.add_argument("--embedded", default=str(project_root() / "data/embedded"))
    parser.add_argument("--tiles", type=int, default=48, help="held-out tiles scored per task")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--out", default=str(project_root() / "outputs/demo_translate"))
    parser.add_argument("--translators-only", action="store_true", help="skip the text-to-NIR / PAN figure")
    args = parser.parse_args(argv)
    out = Path(args.out)
    translators = args.translators or sorted(str(p.parent) for p in shipped("translate").glob("*/translate.json"))
    if not translators:
        raise SystemExit("no translator folders: train them with `make translate-train`")
    reports = [
        evaluate_translator(t, args.pairs, args.embedded, n_tiles=args.tiles, steps=args.steps, out_dir=out)
        for t in translators
    ]
    print(markdown_table(reports))
    written = [r["strip"] for r in reports]
    chroma = None
    if not args.translators_only:
        figure, chroma = cross_modal_figure(args.model, out, steps=args.steps)
        print("mean chroma of generated tiles (0 = single band):", ", ".join(f"{k} {v:.4f}" for k, v in chroma.items()))
        written.append(str(figure))
    (out / "translate_eval.json").write_text(json.dumps({"translators": reports, "chroma": chroma}, indent=2))
    print(f"wrote {', '.join(written)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
