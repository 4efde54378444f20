"""Caption control of a text-to-image model: how often an image-text classifier names the class of the prompt.

``python -m scripts.caption_control [--model weights/demo] [--classifier weights/rsclip_tiny] --out DIR``
generates ``--n`` tiles per scene class of the embedded captions (prompts: that class's caption phrases, levels:
those of real training tiles of the class), classifies them zero-shot with the classifier over the same
classes, and prints, per prompt class, the agreement beside the classifier's accuracy on real held-out tiles
of the class (the ceiling the classifier allows). Writes ``DIR/caption_control.json`` and a sample grid
``DIR/caption_control.png`` (one row per class). Generated tiles are kept and reused by a rerun.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from text2earth.core.paths import project_root, shipped
from text2earth.eval.datasets import iter_shard_tiles, read_shard_tiles
from text2earth.eval.generation import EvalPrompt, generate_images
from text2earth.eval.zero_shot import class_embeddings
from text2earth.io.files import atomic_path, write_atomic
from text2earth.io.images import labelled_grid
from text2earth.models.rsclip import load_image_text_model

MIN_TRAIN_TILES = 20  # classes with fewer training tiles (bare soil: 2) are not something the model could learn


def _levels_by_class(train_shards: str, classes: list[str], n: int) -> dict[str, list[float]]:
    levels: dict[str, list[float]] = {c: [] for c in classes}
    for tile in iter_shard_tiles(train_shards):
        if tile.label in levels and len(levels[tile.label]) < n:
            levels[tile.label].append(tile.level)
    return levels


def measure(
    model_dir: str | Path,
    classifier_dir: str | Path,
    data_dir: str | Path,
    out_dir: str | Path,
    n: int = 8,
    steps: int = 20,
    guidance: float = 4.0,
    seed: int = 0,
) -> dict[str, Any]:
    from data_modules.embedded.captions import class_descriptions
    from text2earth.pipelines.text2img import Text2EarthPipeline

    data_dir = Path(data_dir)
    train_counts = Counter(t.meta.get("scene_class", "") for t in iter_shard_tiles(str(data_dir / "train-*.tar")))
    descriptions = class_descriptions()
    classes = [c for c in descriptions if train_counts[c] >= MIN_TRAIN_TILES]
    levels = _levels_by_class(str(data_dir / "train-*.tar"), classes, n)
    prompts = []
    for c in classes:
        phrases = descriptions[c]
        for i in range(n):
            key = f"{c}_{i:02d}"
            prompts.append(EvalPrompt(key, phrases[i % len(phrases)], levels[c][i % len(levels[c])], c, seed + i))
    pipe = Text2EarthPipeline.from_pretrained(model_dir)
    generated = generate_images(pipe, prompts, Path(out_dir) / "tiles", 16, steps, guidance, "caption control")
    classifier = load_image_text_model(classifier_dir)
    texts = class_embeddings(classifier, [descriptions[c] for c in classes])

    def predict(images: list) -> list[str]:
        logits = classifier.logits(classifier.embed_images(images), texts)
        return [classes[i] for i in logits.argmax(dim=1).tolist()]

    gen_pred = predict([g.load() for g in generated])
    real = [t for t in read_shard_tiles(str(data_dir / "val-*.tar")) if t.label in classes]
    real_pred = predict([t.image for t in real])
    per_class = {}
    for c in classes:
        gen = [p == c for p, g in zip(gen_pred, generated, strict=True) if g.label == c]
        rl = [p == c for p, t in zip(real_pred, real, strict=True) if t.label == c]
        per_class[c] = {
            "generated": sum(gen) / len(gen),
            "generated_predicted": dict(Counter(p for p, g in zip(gen_pred, generated, strict=True) if g.label == c)),
            "real_heldout": (sum(rl) / len(rl)) if rl else None,
            "n_real": len(rl),
        }
    report = {
        "model": str(model_dir),
        "classifier": str(classifier_dir),
        "classes": classes,
        "per_class": per_class,
        "generated_mean": sum(v["generated"] for v in per_class.values()) / len(classes),
        "real_mean": _mean([v["real_heldout"] for v in per_class.values()]),
        "chance": 1.0 / len(classes),
        "settings": {"n_per_class": n, "steps": steps, "guidance": guidance, "seed": seed},
    }
    out = Path(out_dir)
    write_atomic(out / "caption_control.json", (json.dumps(report, indent=2) + "\n").encode())
    rows = [[g.load() for g in generated if g.label == c] for c in classes]
    grid = labelled_grid(rows, row_labels=classes, col_labels=None)
    with atomic_path(out / "caption_control.png") as tmp:
        grid.save(tmp, format="PNG")
    return report


def _mean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


def table(report: dict[str, Any]) -> str:
    lines = [
        "| prompt class | generated tiles classified as the prompt's class % | real held-out tiles % (n) |",
        "|---|---|---|",
    ]
    for c, v in report["per_class"].items():
        real = f"{100 * v['real_heldout']:.0f} ({v['n_real']})" if v["real_heldout"] is not None else "- (0)"
        lines.append(f"| {c} | {100 * v['generated']:.0f} | {real} |")
    lines.append(
        f"| **mean** | **{100 * report['generated_mean']:.1f}** | {100 * (report['real_mean'] or 0):.1f} |"
        f"\n\nchance {100 * report['chance']:.1f}%"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="text-to-image folder (default: the shipped weights/demo)")
    parser.add_argument("--classifier", default=None, help="image-text folder (default: weights/rsclip_tiny)")
    parser.add_argument("--data", default=str(project_root() / "data/embedded"), help="embedded shard folder")
    parser.add_argument("--n", type=int, default=8, help="generated tiles per class")
    parser.add_argument("--steps", type=int, default=20, help="sampling steps")
    parser.add_argument("--guidance", type=float, default=4.0, help="classifier-free guidance scale")
    parser.add_argument("--out", default=str(project_root() / "outputs/caption_control"), help="output folder")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    report = measure(
        args.model or shipped("demo"),
        args.classifier or shipped("rsclip_tiny"),
        args.data,
        args.out,
        args.n,
        args.steps,
        args.guidance,
    )
    print(table(report))
    print(f"wrote {args.out}/caption_control.json and {args.out}/caption_control.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
