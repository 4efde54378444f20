"""Zero-shot scene classification of the held-out embedded tiles with an image-text model, beside chance and the
majority class.

``python -m scripts.rsclip_embedded [--model weights/rsclip_tiny] [--shards 'data/embedded/val-*.tar'] --out DIR``
prints a Markdown table and writes ``DIR/zero_shot_embedded.json`` and ``DIR/confusion.png``. Each class is
described by the phrases its captions are written from (``data_modules.embedded.captions.class_descriptions``);
the candidate classes are those with held-out tiles.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from text2earth.core.paths import project_root, shipped
from text2earth.eval.datasets import read_shard_tiles
from text2earth.eval.zero_shot import accuracy_report, class_embeddings, confusion_image
from text2earth.io.files import atomic_path, write_atomic
from text2earth.models.rsclip import load_image_text_model


def evaluate(model_dir: str | Path, shards: str, out_dir: str | Path) -> dict[str, Any]:
    from data_modules.embedded.captions import class_descriptions

    model = load_image_text_model(model_dir)
    tiles = read_shard_tiles(shards)
    descriptions = class_descriptions()
    classes = [c for c in descriptions if any(t.label == c for t in tiles)]
    labels = torch.tensor([classes.index(t.label) for t in tiles])
    texts = class_embeddings(model, [descriptions[c] for c in classes])
    logits = model.logits(model.embed_images([t.image for t in tiles]), texts)
    report = accuracy_report(logits, labels, classes)
    report.update(model=str(model_dir), shards=shards, prompts={c: descriptions[c] for c in classes})
    out = Path(out_dir)
    write_atomic(out / "zero_shot_embedded.json", (json.dumps(report, indent=2) + "\n").encode())
    with atomic_path(out / "confusion.png") as tmp:
        confusion_image(report["confusion"], classes).save(tmp, format="PNG")
    return report


def table(report: dict[str, Any]) -> str:
    counts = [sum(row) for row in report["confusion"]]
    lines = [
        f"| held-out tiles ({report['n_images']}, {len(report['classes'])} classes) | top-1 % |",
        "|---|---|",
        f"| zero-shot, this model | **{100 * report['top1']:.1f}** (top-5 {100 * report['top5']:.1f}) |",
        f"| chance (1 / classes) | {100 * report['chance_top1']:.1f} |",
        f"| always the majority class | {100 * report['majority_top1']:.1f} |",
    ]
    per_class = ", ".join(
        f"{c} {100 * v:.0f} ({n})" for (c, v), n in zip(report["per_class_top1"].items(), counts, strict=True)
    )
    return "\n".join(lines) + f"\n\nper class (top-1 %, tiles): {per_class}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="image-text folder (default: the shipped weights/rsclip_tiny)")
    parser.add_argument("--shards", default=str(project_root() / "data/embedded/val-*.tar"), help="held-out shards")
    parser.add_argument("--out", default=str(project_root() / "outputs/rsclip_embedded"), help="output folder")
    args = parser.parse_args(argv)
    report = evaluate(args.model or shipped("rsclip_tiny"), args.shards, args.out)
    print(table(report))
    print(f"wrote {args.out}/zero_shot_embedded.json and {args.out}/confusion.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
